package engineplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/plugin"
	"github.com/erpflow/erpflow/plugin/internal/glue"
	pb "github.com/erpflow/erpflow/plugin/proto/v1"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

// Handshake is the go-plugin handshake of the engine served as a plugin; its
// cookie differs from plugin.Handshake's, so that an action plugin cannot
// be started as an engine nor the other way round.
// Its protocol version is the engine contract's (engine.proto), which
// versions apart from the action plugins'.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "ERPFLOW_ENGINE_PLUGIN",
	MagicCookieValue: "5d1e0b7a-erpflow-engine-plugin",
}

// enginePluginName names the engine in the go-plugin PluginSet.
const enginePluginName = "engine"

// EngineOptions configures the engine running as a plugin. They travel to
// the subprocess as JSON. Zero values mean defaults.
type EngineOptions struct {
	// Database is the store: "sqlite:PATH" or "postgres://…" for the
	// erpflow binary (what the serving binary's OpenStore accepts).
	// Default "sqlite:erpflow.db" in the working directory.
	Database string `json:"database,omitempty"`
	// Workers is how many actions run at once. Default 32.
	Workers int `json:"workers,omitempty"`
	// AllowHTTP lets webhooks use http:// URLs. Default false.
	AllowHTTP bool `json:"allow_http,omitempty"`
	// AllowPrivateNetworks turns the webhook SSRF guard off. Default false.
	AllowPrivateNetworks bool `json:"allow_private_networks,omitempty"`
	// Plugins are action plugins the engine process runs. Default none.
	Plugins []plugin.Spec `json:"plugins,omitempty"`
}

// EngineServer configures ServeEngine. The store and the action types are
// the serving binary's choice (erpflow's plugin-engine command: every
// store, the webhook action), so that this package does not link every
// database driver into every host.
type EngineServer struct {
	// OpenStore opens the store for EngineOptions.Database. Required.
	OpenStore func(ctx context.Context, url string) (engine.Store, error)
	// Registry builds the action registry (plugins are added to it).
	// Required.
	Registry func(opts EngineOptions) (*actions.Registry, error)
	// Logger receives the engine's logs; they reach the host's logger
	// through go-plugin. Default: JSON records on stderr (see Logger).
	Logger *slog.Logger
}

// ServeEngine serves an erpflow engine as a go-plugin plugin (the hidden
// `erpflow plugin-engine` command calls it). It returns when the host ends
// the plugin, after stopping the engine and closing the store.
func ServeEngine(cfg EngineServer) {
	if cfg.Logger == nil {
		cfg.Logger = plugin.Logger()
	}
	srv := &engineServer{cfg: cfg}
	glue.ExitWithParent()
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         goplugin.PluginSet{enginePluginName: &enginePlugin{server: srv}},
		GRPCServer:      goplugin.DefaultGRPCServer,
	})
	srv.shutdown()
}

// enginePlugin is the go-plugin glue of the EnginePlugin service.
type enginePlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	server *engineServer // server side only
}

func (p *enginePlugin) GRPCServer(b *goplugin.GRPCBroker, s *grpc.Server) error {
	p.server.broker = b
	pb.RegisterEnginePluginServer(s, p.server)
	return nil
}

func (p *enginePlugin) GRPCClient(_ context.Context, b *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &engineConn{rpc: pb.NewEnginePluginClient(c), broker: b}, nil
}

type engineConn struct {
	rpc    pb.EnginePluginClient
	broker *goplugin.GRPCBroker
}

// engineServer runs in the plugin process.
type engineServer struct {
	pb.UnimplementedEnginePluginServer
	cfg    EngineServer
	broker *goplugin.GRPCBroker

	mu     sync.Mutex
	eng    *engine.Engine
	store  engine.Store
	reg    *actions.Registry
	host   *plugin.Host
	loader *grpc.ClientConn
}

func (s *engineServer) ready() (*engine.Engine, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.eng == nil {
		return nil, status.Error(codes.FailedPrecondition, "engine not opened")
	}
	return s.eng, nil
}

func (s *engineServer) Open(ctx context.Context, req *pb.OpenRequest) (*pb.OpenResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.eng != nil {
		return nil, status.Error(codes.FailedPrecondition, "engine already opened")
	}
	var opts EngineOptions
	if len(req.Options) > 0 {
		if err := json.Unmarshal(req.Options, &opts); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "options: %v", err)
		}
	}
	if opts.Database == "" {
		opts.Database = "sqlite:erpflow.db"
	}
	if s.cfg.OpenStore == nil || s.cfg.Registry == nil {
		return nil, status.Error(codes.Internal, "this engine plugin binary sets no OpenStore or Registry in engineplugin.EngineServer")
	}
	st, err := s.cfg.OpenStore(ctx, opts.Database)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "database: %v", err)
	}
	fail := func(code codes.Code, format string, args ...any) (*pb.OpenResponse, error) {
		if s.host != nil {
			_ = s.host.Close()
			s.host = nil
		}
		if s.loader != nil {
			_ = s.loader.Close()
			s.loader = nil
		}
		_ = st.Close()
		return nil, status.Errorf(code, format, args...)
	}
	reg, err := s.cfg.Registry(opts)
	if err != nil {
		return fail(codes.InvalidArgument, "actions: %v", err)
	}
	if len(opts.Plugins) > 0 {
		if s.host, err = plugin.Start(ctx, opts.Plugins, reg, s.cfg.Logger); err != nil {
			return fail(codes.InvalidArgument, "%v", err)
		}
	}
	ecfg := engine.Config{Workers: opts.Workers, Logger: s.cfg.Logger}
	if req.EntityLoader != 0 {
		conn, err := s.broker.Dial(req.EntityLoader)
		if err != nil {
			return fail(codes.Unavailable, "entity loader: %v", err)
		}
		s.loader = conn
		ecfg.Entities = &brokerLoader{rpc: pb.NewEntityLoaderClient(conn)}
	}
	eng, err := engine.New(st, ecfg)
	if err != nil {
		return fail(codes.InvalidArgument, "%v", err)
	}
	if err := eng.Start(context.Background()); err != nil {
		_ = eng.Stop(context.Background())
		return fail(codes.Internal, "%v", err)
	}
	s.eng, s.store, s.reg = eng, st, reg
	return &pb.OpenResponse{}, nil
}

func (s *engineServer) Close(ctx context.Context, _ *pb.CloseRequest) (*pb.CloseResponse, error) {
	if err := s.close(ctx); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pb.CloseResponse{}, nil
}

// close stops the engine and closes what Open opened; idempotent.
func (s *engineServer) close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.eng != nil {
		errs = append(errs, s.eng.Stop(ctx), s.store.Close())
		s.eng = nil
	}
	if s.host != nil {
		errs = append(errs, s.host.Close())
		s.host = nil
	}
	if s.loader != nil {
		_ = s.loader.Close()
		s.loader = nil
	}
	return errors.Join(errs...)
}

// shutdown runs when the host ended the plugin without Close (go-plugin's
// grace period is 2s).
func (s *engineServer) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_ = s.close(ctx)
}

func (s *engineServer) Emit(ctx context.Context, req *pb.EmitRequest) (*pb.EmitResponse, error) {
	eng, err := s.ready()
	if err != nil {
		return nil, err
	}
	ev, err := templates.DecodeEvent(req.Event)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	res, err := eng.Emit(ctx, ev)
	if err != nil {
		if templates.IsEventError(err) {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		return nil, status.Error(codes.Internal, err.Error())
	}
	b, err := json.Marshal(res)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pb.EmitResponse{Result: b}, nil
}

func (s *engineServer) Reload(_ context.Context, req *pb.ReloadRequest) (*pb.ReloadResponse, error) {
	eng, err := s.ready()
	if err != nil {
		return nil, err
	}
	name := req.Filename
	if name == "" {
		name = "rules.yaml"
	}
	rules, err := triggers.Parse(name, []byte(req.Rules), triggers.LoadOptions{Actions: s.reg})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := eng.Reload(rules); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &pb.ReloadResponse{Rules: int32(len(rules))}, nil
}

func (s *engineServer) GetDelivery(ctx context.Context, req *pb.GetDeliveryRequest) (*pb.GetDeliveryResponse, error) {
	eng, err := s.ready()
	if err != nil {
		return nil, err
	}
	d, atts, err := eng.Store().GetDelivery(ctx, req.Id)
	if err != nil {
		if errors.Is(err, engine.ErrNotFound) {
			return nil, status.Errorf(codes.NotFound, "delivery %q not found", req.Id)
		}
		return nil, status.Error(codes.Internal, err.Error())
	}
	db, _ := json.Marshal(d)
	ab, _ := json.Marshal(atts)
	return &pb.GetDeliveryResponse{Delivery: db, Attempts: ab}, nil
}

func (s *engineServer) ListDeliveries(ctx context.Context, req *pb.ListDeliveriesRequest) (*pb.ListDeliveriesResponse, error) {
	eng, err := s.ready()
	if err != nil {
		return nil, err
	}
	var f engine.DeliveryFilter
	if len(req.Filter) > 0 {
		if err := json.Unmarshal(req.Filter, &f); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "filter: %v", err)
		}
	}
	ds, err := eng.Store().ListDeliveries(ctx, f)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	b, _ := json.Marshal(ds)
	return &pb.ListDeliveriesResponse{Deliveries: b}, nil
}

// brokerLoader is the engine's EntityLoader in the plugin process: it calls
// the host back over the go-plugin broker.
type brokerLoader struct{ rpc pb.EntityLoaderClient }

func (l *brokerLoader) LoadEntity(ctx context.Context, tenant, entity, id string) (json.RawMessage, error) {
	resp, err := l.rpc.LoadEntity(ctx, &pb.LoadEntityRequest{Tenant: tenant, Entity: entity, Id: id})
	if err != nil {
		if st, ok := status.FromError(err); ok {
			if st.Code() == codes.NotFound {
				return nil, fmt.Errorf("host: %s: %w", st.Message(), engine.ErrNotFound)
			}
			return nil, fmt.Errorf("host: %s", st.Message())
		}
		return nil, err
	}
	return resp.Entity, nil
}

// loaderServer serves the host's EntityLoader to the engine process.
type loaderServer struct {
	pb.UnimplementedEntityLoaderServer
	l engine.EntityLoader
}

func (s *loaderServer) LoadEntity(ctx context.Context, req *pb.LoadEntityRequest) (*pb.LoadEntityResponse, error) {
	b, err := s.l.LoadEntity(ctx, req.Tenant, req.Entity, req.Id)
	if err != nil {
		if errors.Is(err, engine.ErrNotFound) {
			return nil, status.Error(codes.NotFound, err.Error())
		}
		return nil, status.Error(codes.Unknown, err.Error())
	}
	return &pb.LoadEntityResponse{Entity: b}, nil
}

// EngineConfig configures StartEngine. Zero values mean defaults.
type EngineConfig struct {
	// Options configure the engine in the subprocess.
	Options EngineOptions
	// Entities, when set, loads full entities for thin events (no data);
	// the engine calls it back over the go-plugin broker. Default none.
	Entities engine.EntityLoader
	// Args are the command's arguments. Default ["plugin-engine"] (the
	// erpflow binary's hidden subcommand); binaries that call ServeEngine
	// from main ignore them.
	Args []string
	// SHA256 is the hex SHA-256 the binary must have. Default: unchecked.
	SHA256 string
	// Logger receives the engine's logs. Default slog.Default().
	Logger *slog.Logger
}

// EngineClient is an erpflow engine running in a subprocess. Its methods
// are safe for concurrent use.
type EngineClient struct {
	client *goplugin.Client
	rpc    pb.EnginePluginClient
	pid    int
}

// StartEngine starts the engine binary at path (the erpflow binary, or one
// that calls ServeEngine), opens its store and starts its workers.
func StartEngine(ctx context.Context, path string, cfg EngineConfig) (*EngineClient, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	args := cfg.Args
	if args == nil {
		args = []string{"plugin-engine"}
	}
	errorf := func(err error) error { return &plugin.Error{Plugin: "erpflow-engine", Path: path, Err: err} }
	sum, err := glue.ParseChecksum(cfg.SHA256)
	if err != nil {
		return nil, errorf(err)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, errorf(fmt.Errorf("binary not found: %w", err))
	}
	client, raw, err := glue.Start(glue.Launch{
		Handshake: Handshake,
		Name:      enginePluginName,
		Plugin:    &enginePlugin{},
		Cmd:       exec.Command(path, args...),
		Log:       cfg.Logger.With("plugin", "erpflow-engine"),
		Checksum:  sum,
		SHA256:    cfg.SHA256,
	})
	if err != nil {
		return nil, errorf(err)
	}
	conn := raw.(*engineConn)
	c := &EngineClient{client: client, rpc: conn.rpc}
	if rcfg := client.ReattachConfig(); rcfg != nil {
		c.pid = rcfg.Pid
	}
	opts, err := json.Marshal(cfg.Options)
	if err != nil {
		client.Kill()
		return nil, err
	}
	req := &pb.OpenRequest{Options: opts}
	if cfg.Entities != nil {
		id := conn.broker.NextId()
		go conn.broker.AcceptAndServe(id, func(o []grpc.ServerOption) *grpc.Server {
			s := grpc.NewServer(o...)
			pb.RegisterEntityLoaderServer(s, &loaderServer{l: cfg.Entities})
			return s
		})
		req.EntityLoader = id
	}
	if _, err := c.rpc.Open(ctx, req); err != nil {
		client.Kill()
		return nil, errorf(fmt.Errorf("open: %w", rpcError(err)))
	}
	return c, nil
}

// rpcError turns a gRPC status into a plain error with its message;
// NotFound wraps engine.ErrNotFound.
func rpcError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.NotFound:
		return fmt.Errorf("%s: %w", st.Message(), engine.ErrNotFound)
	case codes.Unavailable, codes.Canceled:
		return fmt.Errorf("erpflow engine plugin unavailable: %s", st.Message())
	}
	return errors.New(st.Message())
}

// Emit accepts one event; it returns after the event and its deliveries
// are committed by the engine process.
func (c *EngineClient) Emit(ctx context.Context, ev engine.Event) (engine.EmitResult, error) {
	var res engine.EmitResult
	b, err := json.Marshal(ev)
	if err != nil {
		return res, err
	}
	resp, err := c.rpc.Emit(ctx, &pb.EmitRequest{Event: b})
	if err != nil {
		return res, rpcError(err)
	}
	err = json.Unmarshal(resp.Result, &res)
	return res, err
}

// Reload replaces the rules with those of a rules YAML document; filename
// names it in error messages (file:line:col).
func (c *EngineClient) Reload(ctx context.Context, filename string, rules []byte) (int, error) {
	resp, err := c.rpc.Reload(ctx, &pb.ReloadRequest{Filename: filename, Rules: string(rules)})
	if err != nil {
		return 0, rpcError(err)
	}
	return int(resp.Rules), nil
}

// Delivery returns one delivery with its attempts; a missing one is an
// error wrapping engine.ErrNotFound.
func (c *EngineClient) Delivery(ctx context.Context, id string) (engine.Delivery, []engine.Attempt, error) {
	var d engine.Delivery
	var atts []engine.Attempt
	resp, err := c.rpc.GetDelivery(ctx, &pb.GetDeliveryRequest{Id: id})
	if err != nil {
		return d, nil, rpcError(err)
	}
	if err := json.Unmarshal(resp.Delivery, &d); err != nil {
		return d, nil, err
	}
	err = json.Unmarshal(resp.Attempts, &atts)
	return d, atts, err
}

// Deliveries lists deliveries matching f, newest first.
func (c *EngineClient) Deliveries(ctx context.Context, f engine.DeliveryFilter) ([]engine.Delivery, error) {
	b, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	resp, err := c.rpc.ListDeliveries(ctx, &pb.ListDeliveriesRequest{Filter: b})
	if err != nil {
		return nil, rpcError(err)
	}
	var out []engine.Delivery
	err = json.Unmarshal(resp.Deliveries, &out)
	return out, err
}

// Close stops the engine (in-flight deliveries get until ctx ends, then
// go back to the queue), closes its store, ends the process and waits for
// it to exit.
func (c *EngineClient) Close(ctx context.Context) error {
	_, err := c.rpc.Close(ctx, &pb.CloseRequest{})
	c.client.Kill()
	if err != nil {
		return fmt.Errorf("erpflow engine plugin: close: %w", rpcError(err))
	}
	return nil
}

// Exited reports whether the engine process has ended (it crashed or was
// killed); calls then fail, and the host may StartEngine again: what Emit
// accepted is in the store.
func (c *EngineClient) Exited() bool { return c.client.Exited() }

// PID is the engine process's id.
func (c *EngineClient) PID() int { return c.pid }
