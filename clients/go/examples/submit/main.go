// Command submit runs a workflow file on Stellwerk and prints its tasks' results.
//
//	STELLWERK_ADDRESS=127.0.0.1:50051 go run ./examples/submit ../../examples/simple_mcp_workflow.yaml
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	stellwerk "stellwerk.dev/clients/go"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: submit WORKFLOW_FILE")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	client, err := stellwerk.Dial(stellwerk.Address())
	if err != nil {
		fail(err)
	}
	defer client.Close()

	run, err := client.SubmitFile(ctx, os.Args[1])
	if err != nil {
		fail(err)
	}
	fmt.Println("run", run.GetRunId())
	run, err = client.Wait(ctx, run.GetRunId())
	if err != nil {
		fail(err)
	}
	for _, task := range run.GetTasks() {
		fmt.Printf("%-12s %-10s %s%s\n", task.GetTaskId(), task.GetState(), task.GetResultJson(), task.GetError())
	}
	fmt.Println(run.GetState())
	if run.GetState() != stellwerk.RunCompleted {
		os.Exit(1)
	}
}

func fail(err error) {
	var serr *stellwerk.Error
	if errors.As(err, &serr) {
		for _, v := range serr.Violations { // every problem of an invalid workflow
			fmt.Fprintf(os.Stderr, "%s: %s\n", v.Field, v.Description)
		}
	}
	fmt.Fprintln(os.Stderr, err)
	if errors.Is(err, stellwerk.ErrInvalidArgument) {
		os.Exit(2)
	}
	os.Exit(3)
}
