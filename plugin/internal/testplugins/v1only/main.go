// Command v1only is an action plugin as the SDK built it before protocol
// 2: it speaks only protocol 1, provides one type ("legacy") and knows
// nothing of request types. It checks that erpflow still runs such
// plugins.
package main

import (
	"context"
	"fmt"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/erpflow/erpflow/plugin"
	pb "github.com/erpflow/erpflow/plugin/proto/v1"
)

type server struct {
	pb.UnimplementedActionPluginServer
}

func (server) Describe(context.Context, *pb.DescribeRequest) (*pb.DescribeResponse, error) {
	return &pb.DescribeResponse{Type: "legacy", Version: "0.9.0",
		ConfigSchema: `{"type":"object","properties":{"message":{"type":"string"}},"required":["message"]}`}, nil
}

func (server) Validate(context.Context, *pb.ValidateRequest) (*pb.ValidateResponse, error) {
	return &pb.ValidateResponse{}, nil
}

func (server) Execute(_ context.Context, req *pb.ExecuteRequest) (*pb.ExecuteResponse, error) {
	return &pb.ExecuteResponse{Outcome: &pb.Outcome{Status: pb.Status_STATUS_SUCCEEDED,
		Detail: []byte(fmt.Sprintf(`{"legacy":true,"delivery":%q}`, req.DeliveryId))}}, nil
}

type grpcPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
}

func (grpcPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterActionPluginServer(s, server{})
	return nil
}

func (grpcPlugin) GRPCClient(context.Context, *goplugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("server side only")
}

func main() {
	hs := plugin.Handshake
	hs.ProtocolVersion = 1
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: hs,
		Plugins:         goplugin.PluginSet{"action": grpcPlugin{}},
		GRPCServer:      goplugin.DefaultGRPCServer,
	})
}
