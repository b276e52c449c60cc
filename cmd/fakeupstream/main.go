// Command fakeupstream serves the project's fake OpenAI-compatible upstream
// for manual testing and the benchmark (examples/Caddyfile serves the same fake with the
// development binary's fake_openai directive instead):
//
//	go run ./cmd/fakeupstream -addr 127.0.0.1:9001 -name fake1 -chunks 64
//
// With -h2c it also speaks HTTP/2 without TLS to clients that open with the
// HTTP/2 preface (Caddy's transport http { versions h2c }); GET /_fake/stats
// counts those requests as "http2".
//
// The flags set the initial settings; change them at run time with
// POST /_fake/settings (JSON, durations as Go duration strings, absent
// fields unchanged), reset them with DELETE /_fake/settings, and read the
// counters with GET /_fake/stats:
//
//	curl -d '{"status":429,"headers":{"Retry-After":"1"}}' http://127.0.0.1:9001/_fake/settings
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/llmgw/caddy-llm-gateway/internal/fakeupstream"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9001", "listen address")
	name := flag.String("name", "fake", "server name, shown in answers (\"hello from <name>\")")
	h2c := flag.Bool("h2c", false, "serve HTTP/2 without TLS (prior knowledge) besides HTTP/1.1 on the same address")
	var set fakeupstream.Settings
	flag.IntVar(&set.Chunks, "chunks", fakeupstream.DefaultChunks, "content chunks per stream")
	flag.DurationVar(&set.ChunkDelay, "chunk-delay", 0, "pause between stream chunks")
	flag.DurationVar(&set.Delay, "delay", 0, "wait before response headers")
	flag.StringVar(&set.Content, "content", "", "assistant text (default \"hello from <name>\")")
	flag.Parse()

	listen := fakeupstream.Listen
	if *h2c {
		listen = fakeupstream.ListenH2C
	}
	srv, err := listen(*name, *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv.Set(set)
	log.Printf("fake upstream %s serving %s", *name, srv.URL())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	if err := srv.Close(); err != nil {
		log.Printf("fake upstream %s: close: %v", *name, err)
	}
}
