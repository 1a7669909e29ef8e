package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strings"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/erpflow/erpflow/actions"
	pb "github.com/erpflow/erpflow/plugin/proto/v1"
)

// actionPlugin is the go-plugin glue of the ActionPlugin service: the
// server side wraps an author's Action, the client side is the raw gRPC
// client the host uses.
type actionPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	impl Action
}

func (p *actionPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterActionPluginServer(s, &actionServer{impl: p.impl})
	return nil
}

func (p *actionPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pb.NewActionPluginClient(c), nil
}

type actionServer struct {
	pb.UnimplementedActionPluginServer
	impl Action
}

func (s *actionServer) Describe(context.Context, *pb.DescribeRequest) (*pb.DescribeResponse, error) {
	d := s.impl.Describe()
	return &pb.DescribeResponse{Type: d.Type, Version: d.Version, ConfigSchema: string(d.ConfigSchema)}, nil
}

func (s *actionServer) Validate(_ context.Context, req *pb.ValidateRequest) (*pb.ValidateResponse, error) {
	resp := &pb.ValidateResponse{}
	for _, e := range configErrors(s.impl.Validate(json.RawMessage(req.Config))) {
		resp.Errors = append(resp.Errors, &pb.ValidationError{Path: e.Path, Message: e.Msg})
	}
	return resp, nil
}

func (s *actionServer) Execute(ctx context.Context, req *pb.ExecuteRequest) (resp *pb.ExecuteResponse, err error) {
	// A panic in the author's code fails this attempt (retryable) instead
	// of taking the process and every other attempt in flight with it.
	defer func() {
		if r := recover(); r != nil {
			Logger().Error("Execute panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			resp = &pb.ExecuteResponse{Outcome: outcomeToPB(Retry(fmt.Errorf("plugin panicked: %v", r), 0))}
		}
	}()
	ev := json.RawMessage(req.Event)
	if len(ev) == 0 {
		ev = json.RawMessage("{}")
	}
	out := s.impl.Execute(ctx, &Delivery{
		ID:      req.DeliveryId,
		Attempt: int(req.Attempt),
		Rule:    req.Rule,
		Test:    req.Test,
		Event:   ev,
		Config:  json.RawMessage(req.Config),
	})
	return &pb.ExecuteResponse{Outcome: outcomeToPB(out)}, nil
}

func outcomeToPB(o actions.Outcome) *pb.Outcome {
	st := pb.Status_STATUS_SUCCEEDED
	switch o.Status {
	case actions.Retryable:
		st = pb.Status_STATUS_RETRYABLE
	case actions.Permanent:
		st = pb.Status_STATUS_PERMANENT
	}
	return &pb.Outcome{
		Status:       st,
		RetryAfterMs: o.RetryAfter.Milliseconds(),
		Code:         int32(o.Code),
		Error:        o.Error,
		Detail:       o.Detail,
	}
}

// outcomeFromPB converts a plugin's outcome; an unknown status is a
// retryable failure so that nothing is lost to a plugin bug.
func outcomeFromPB(o *pb.Outcome) actions.Outcome {
	if o == nil {
		return actions.Outcome{Status: actions.Retryable, Error: "plugin returned no outcome"}
	}
	out := actions.Outcome{
		RetryAfter: time.Duration(o.RetryAfterMs) * time.Millisecond,
		Code:       int(o.Code),
		Error:      o.Error,
	}
	if len(o.Detail) > 0 && json.Valid(o.Detail) {
		out.Detail = json.RawMessage(o.Detail)
	}
	switch o.Status {
	case pb.Status_STATUS_SUCCEEDED:
		out.Status = actions.Succeeded
	case pb.Status_STATUS_PERMANENT:
		out.Status = actions.Permanent
	default:
		out.Status = actions.Retryable
		if o.Status != pb.Status_STATUS_RETRYABLE {
			out.Error = strings.TrimSpace("plugin returned an unknown status; " + out.Error)
		}
	}
	if out.Status != actions.Succeeded && out.Error == "" {
		out.Error = "plugin reported a failure without a message"
	}
	return out
}
