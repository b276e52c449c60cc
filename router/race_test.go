//go:build race

package router

// raceEnabled is set under the race detector, which makes the long randomized tests ~100x
// slower: they then run a smaller sample.
const raceEnabled = true
