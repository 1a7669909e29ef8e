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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/erpflow/erpflow/actions"
	pb "github.com/erpflow/erpflow/plugin/proto/v1"
)

// actionPlugin is the go-plugin glue of the ActionPlugin service: the
// server side wraps an author's Action, the client side is the raw gRPC
// client the host uses.
type actionPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	srv *actionServer
}

func (p *actionPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterActionPluginServer(s, p.srv)
	return nil
}

func (p *actionPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pb.NewActionPluginClient(c), nil
}

// actionServer serves a plugin's actions; requests name theirs by type
// (protocol 2), or leave it empty for the only one (protocol 1).
type actionServer struct {
	pb.UnimplementedActionPluginServer
	impls []Action
	descs []Description // of impls, read once
}

func newActionServer(impls []Action) (*actionServer, error) {
	s := &actionServer{impls: impls}
	seen := map[string]bool{}
	for i, a := range impls {
		if a == nil {
			return nil, fmt.Errorf("action %d is nil", i+1)
		}
		d := a.Describe()
		switch {
		case d.Type == "":
			return nil, fmt.Errorf("action %d describes no type", i+1)
		case seen[d.Type]:
			return nil, fmt.Errorf("two actions have the type %q", d.Type)
		}
		seen[d.Type] = true
		s.descs = append(s.descs, d)
	}
	return s, nil
}

// impl finds the action a request names.
func (s *actionServer) impl(typ string) (Action, error) {
	if typ == "" && len(s.impls) == 1 {
		return s.impls[0], nil
	}
	for i, d := range s.descs {
		if d.Type == typ {
			return s.impls[i], nil
		}
	}
	return nil, status.Errorf(codes.InvalidArgument, "this plugin has no action type %q", typ)
}

func (s *actionServer) Describe(context.Context, *pb.DescribeRequest) (*pb.DescribeResponse, error) {
	first := s.descs[0]
	resp := &pb.DescribeResponse{Type: first.Type, Version: first.Version, ConfigSchema: string(first.ConfigSchema)}
	for _, d := range s.descs {
		resp.Actions = append(resp.Actions, &pb.ActionType{Type: d.Type, ConfigSchema: string(d.ConfigSchema), Description: d.Summary})
	}
	return resp, nil
}

func (s *actionServer) Validate(_ context.Context, req *pb.ValidateRequest) (resp *pb.ValidateResponse, err error) {
	impl, err := s.impl(req.Type)
	if err != nil {
		return nil, err
	}
	// A panic refuses this config instead of taking the process, and the
	// attempts in flight on it, down (configs come from rule authors).
	defer func() {
		if r := recover(); r != nil {
			Logger().Error("Validate panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			resp = &pb.ValidateResponse{Errors: []*pb.ValidationError{{Message: fmt.Sprintf("the plugin panicked validating the config: %v", r)}}}
		}
	}()
	resp = &pb.ValidateResponse{}
	for _, e := range configErrors(impl.Validate(json.RawMessage(req.Config))) {
		resp.Errors = append(resp.Errors, &pb.ValidationError{Path: e.Path, Message: e.Msg})
	}
	return resp, nil
}

func (s *actionServer) Execute(ctx context.Context, req *pb.ExecuteRequest) (resp *pb.ExecuteResponse, err error) {
	impl, err := s.impl(req.Type)
	if err != nil {
		return nil, err
	}
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
	out := impl.Execute(ctx, &Delivery{
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
	case actions.Retryable, actions.Unavailable: // the protocol has no Unavailable: an attempt was made
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

// What of a plugin's outcome the delivery log keeps per attempt, as for
// webhooks: the error's first 2 KiB, a detail of up to 64 KiB.
const (
	MaxOutcomeError  = 2 << 10
	MaxOutcomeDetail = 64 << 10
)

// outcomeFromPB converts a plugin's outcome; an unknown status is a
// retryable failure so that nothing is lost to a plugin bug.
func outcomeFromPB(o *pb.Outcome) actions.Outcome {
	if o == nil {
		return actions.Outcome{Status: actions.Retryable, Error: "plugin returned no outcome"}
	}
	out := actions.Outcome{
		RetryAfter: time.Duration(o.RetryAfterMs) * time.Millisecond,
		Code:       int(o.Code),
		Error:      actions.ClipText(o.Error, MaxOutcomeError),
	}
	switch {
	case len(o.Detail) > MaxOutcomeDetail:
		// The delivery log keeps every attempt's detail: say what it was.
		out.Detail = json.RawMessage(fmt.Sprintf(`{"erpflow_detail_dropped":"larger than %d bytes","bytes":%d}`, MaxOutcomeDetail, len(o.Detail)))
	case len(o.Detail) > 0 && json.Valid(o.Detail):
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
