// Command example calls the Runtara Environment from Go over gRPC: it lists the tenant's
// images, uploads a workflow binary through the streamed RegisterImageStream, starts an
// instance of it, and follows WatchInstance to a terminal status. It exits 0 only when the
// instance COMPLETED.
//
//	go run ./example -server localhost:8002 -tenant acme -binary ./workflow
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"time"

	corev1 "github.com/runtara/runtara-environment/clients/go/gen/runtara/core/v1"
	environmentv1 "github.com/runtara/runtara-environment/clients/go/gen/runtara/environment/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

func main() {
	server := flag.String("server", "localhost:8002", "host:port of the management API (cleartext HTTP/2)")
	tenant := flag.String("tenant", "default", "tenant id")
	apiKey := flag.String("api-key", os.Getenv("RUNTARA_API_KEY"), "API key, when the server has keys")
	binary := flag.String("binary", "", "a workflow binary to upload and run (native runner)")
	name := flag.String("name", "go-example", "image name")
	input := flag.String("input", "{}", "instance input (JSON)")
	vars := envFlag{}
	flag.Var(vars, "env", "K=V for the instance's environment (repeatable)")
	flag.Parse()
	if *binary == "" {
		log.Fatal("-binary is required")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if *apiKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*apiKey)
	}
	conn, err := grpc.DialContext(ctx, *server, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		log.Fatalf("connect %s: %v", *server, err)
	}
	defer conn.Close()
	env := environmentv1.NewEnvironmentServiceClient(conn)

	images, err := env.ListImages(ctx, &environmentv1.ListImagesRequest{TenantId: *tenant})
	if err != nil {
		log.Fatalf("ListImages: %v", err)
	}
	fmt.Printf("images: %d\n", images.TotalCount)

	image, err := upload(ctx, env, *tenant, *name, *binary)
	if err != nil {
		log.Fatalf("RegisterImageStream: %v", err)
	}
	fmt.Printf("registered %s version %d (%s)\n", image.Name, image.Version, image.ImageId)

	started, err := env.StartInstance(ctx, &environmentv1.StartInstanceRequest{TenantId: *tenant, ImageId: image.ImageId, Input: []byte(*input), Env: vars})
	if err != nil {
		log.Fatalf("StartInstance: %v", err)
	}
	fmt.Printf("started %s\n", started.InstanceId)

	watch, err := env.WatchInstance(ctx, &environmentv1.WatchInstanceRequest{TenantId: *tenant, InstanceId: started.InstanceId})
	if err != nil {
		log.Fatalf("WatchInstance: %v", err)
	}
	for {
		change, err := watch.Recv()
		if err != nil {
			log.Fatalf("WatchInstance: %v", err)
		}
		instance := change.Instance
		fmt.Printf("status %s\n", instance.Status)
		switch instance.Status {
		case corev1.InstanceStatus_INSTANCE_STATUS_COMPLETED:
			fmt.Printf("output %s\n", instance.Output)
			return
		case corev1.InstanceStatus_INSTANCE_STATUS_FAILED, corev1.InstanceStatus_INSTANCE_STATUS_CANCELLED:
			fmt.Printf("ended %s: %s\n", instance.TerminationReason, instance.Error)
			os.Exit(1)
		}
	}
}

// upload sends the header (size and sha256 first, so the server verifies them), then the file in 1 MiB chunks.
func upload(ctx context.Context, env environmentv1.EnvironmentServiceClient, tenant, name, path string) (*environmentv1.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	hash := sha256.New()
	size, err := io.Copy(hash, f)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	stream, err := env.RegisterImageStream(ctx)
	if err != nil {
		return nil, err
	}
	header := &environmentv1.ImageUploadHeader{
		TenantId:   tenant,
		Name:       name,
		RunnerType: environmentv1.RunnerType_RUNNER_TYPE_NATIVE,
		BinarySize: size,
		Sha256:     hex.EncodeToString(hash.Sum(nil)),
	}
	if err := stream.Send(&environmentv1.RegisterImageStreamRequest{Payload: &environmentv1.RegisterImageStreamRequest_Header{Header: header}}); err != nil {
		return nil, err
	}
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			chunk := &environmentv1.RegisterImageStreamRequest_Chunk{Chunk: append([]byte(nil), buf[:n]...)}
			if err := stream.Send(&environmentv1.RegisterImageStreamRequest{Payload: chunk}); err != nil {
				return nil, err
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	res, err := stream.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	return res.Image, nil
}

// envFlag collects -env K=V flags.
type envFlag map[string]string

func (e envFlag) String() string { return fmt.Sprint(map[string]string(e)) }

func (e envFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want K=V, got %q", v)
	}
	e[k] = val
	return nil
}
