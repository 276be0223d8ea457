// Command worker serves two methods to a Stellwerk executor:
//
//	demo/go.shout  {"text": "hi"}            -> {"shouted": "HI!", "worker": ID}
//	demo/go.slow   {"ms": 500, "value": ...} -> {"value": ..., "worker": ID} after ms milliseconds
//
//	STELLWERK_EXECUTOR_ADDRESS=127.0.0.1:50052 go run ./examples/worker -id go-1
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	stellwerk "stellwerk.dev/clients/go"
)

func main() {
	id := flag.String("id", "go-worker", "worker id")
	concurrency := flag.Int("concurrency", 4, "attempts run at once")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	worker := stellwerk.NewWorker(stellwerk.ExecutorAddress(),
		stellwerk.WithWorkerID(*id), stellwerk.WithConcurrency(*concurrency))

	worker.RegisterHandler("demo/go.shout", func(ctx context.Context, task *stellwerk.Task) (any, error) {
		var params struct {
			Text string `json:"text"`
		}
		if err := task.Decode(&params); err != nil {
			return nil, err
		}
		return map[string]any{"shouted": strings.ToUpper(params.Text) + "!", "worker": *id}, nil
	})

	worker.RegisterHandler("demo/go.slow", func(ctx context.Context, task *stellwerk.Task) (any, error) {
		var params struct {
			Ms    int `json:"ms"`
			Value any `json:"value"`
		}
		if err := task.Decode(&params); err != nil {
			return nil, err
		}
		// A line per start, so that a test can see which worker holds which attempt.
		fmt.Printf("started %s/%s attempt %d key %s\n", task.RunID, task.TaskID, task.Attempt, task.IdempotencyKey)
		select {
		case <-time.After(time.Duration(params.Ms) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return map[string]any{"value": params.Value, "worker": *id}, nil
	})

	slog.Info("worker starting", "id", *id, "executor", stellwerk.ExecutorAddress())
	fmt.Println("ready")
	if err := worker.Run(ctx); err != nil {
		slog.Error("worker stopped", "error", err)
		os.Exit(1)
	}
}
