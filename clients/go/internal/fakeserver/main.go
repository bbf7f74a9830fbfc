// Command fakeserver stands in for d-engine-server in the Go client's own
// test of its cluster harness (harness_selfcheck_linux_test.go). It is NOT a
// d-engine implementation: its "nodes" share one state file under a file
// lock, so it is trivially linearizable, which lets the test check that the
// harness (processes, SIGKILL/SIGSTOP, history recording, porcupine) accepts
// a correct store, and, with FAKE_DENGINE_STALE_READS=1 (nodes other than
// node 1 answer reads from a copy refreshed every 300ms), that it catches a
// broken one.
//
// It accepts `--config FILE` with the keys the harness writes (node_id,
// data_dir, client_addr, [[members]]) and serves Put, Get, CompareAndSwap,
// Delete, Leader and Members; exactly-once via WriteId like the real server.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

type member struct {
	id         uint64
	clientAddr string
}

type config struct {
	nodeID     uint64
	dataDir    string
	clientAddr string
	members    []member
}

// parseConfig reads the small TOML subset the harness writes.
func parseConfig(path string) (config, error) {
	f, err := os.Open(path)
	if err != nil {
		return config{}, err
	}
	defer f.Close()
	var c config
	var cur *member
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if line == "[[members]]" {
			c.members = append(c.members, member{})
			cur = &c.members[len(c.members)-1]
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return c, fmt.Errorf("%s: bad line %q", path, line)
		}
		k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"`)
		switch {
		case cur == nil && k == "node_id":
			c.nodeID, err = strconv.ParseUint(v, 10, 64)
		case cur == nil && k == "data_dir":
			c.dataDir = v
		case cur == nil && k == "client_addr":
			c.clientAddr = v
		case cur != nil && k == "id":
			cur.id, err = strconv.ParseUint(v, 10, 64)
		case cur != nil && k == "client_addr":
			cur.clientAddr = v
		}
		if err != nil {
			return c, fmt.Errorf("%s: %s: %v", path, k, err)
		}
	}
	return c, sc.Err()
}

type kvRec struct {
	Value   []byte
	Create  uint64
	Mod     uint64
	Version uint64
}

type state struct {
	Rev   uint64
	KVs   map[string]kvRec
	Dedup map[string]json.RawMessage // "client/seq" -> stored response
}

type server struct {
	enginev1.UnimplementedKvServer
	enginev1.UnimplementedClusterServer
	cfg       config
	statePath string
	lockPath  string

	stale   bool
	cacheMu sync.Mutex
	cache   state
}

// withState runs f on the shared state under the file lock; if f reports a
// change the state is written back (atomically) before the lock is released.
func (s *server) withState(f func(st *state) bool) error {
	lf, err := os.OpenFile(s.lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer func() { _ = syscall.Flock(int(lf.Fd()), syscall.LOCK_UN) }()
	st := state{KVs: map[string]kvRec{}, Dedup: map[string]json.RawMessage{}}
	if b, err := os.ReadFile(s.statePath); err == nil {
		if err := json.Unmarshal(b, &st); err != nil {
			return err
		}
	} else if !os.IsNotExist(err) {
		return err
	}
	if st.KVs == nil {
		st.KVs = map[string]kvRec{}
	}
	if st.Dedup == nil {
		st.Dedup = map[string]json.RawMessage{}
	}
	if !f(&st) {
		return nil
	}
	b, err := json.Marshal(&st)
	if err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", s.statePath, s.cfg.nodeID)
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.statePath)
}

// write applies a write once per WriteId; resp is filled with the (stored)
// response.
func (s *server) write(id *enginev1.WriteId, resp any, apply func(st *state)) error {
	var derr error
	err := s.withState(func(st *state) bool {
		key := ""
		if id.GetClientId() != 0 {
			key = fmt.Sprintf("%d/%d", id.GetClientId(), id.GetSeq())
			if old, ok := st.Dedup[key]; ok {
				derr = json.Unmarshal(old, resp)
				return false
			}
		}
		apply(st)
		if key != "" {
			b, err := json.Marshal(resp)
			if err != nil {
				derr = err
				return false
			}
			st.Dedup[key] = b
		}
		return true
	})
	if err != nil {
		return err
	}
	return derr
}

func toProto(k string, r kvRec) *enginev1.KeyValue {
	return &enginev1.KeyValue{Key: []byte(k), Value: r.Value, CreateRevision: r.Create, ModRevision: r.Mod, Version: r.Version}
}

func (s *server) Put(_ context.Context, r *enginev1.PutRequest) (*enginev1.PutResponse, error) {
	resp := &enginev1.PutResponse{}
	err := s.write(r.GetWriteId(), resp, func(st *state) {
		st.Rev++
		old, ok := st.KVs[string(r.Key)]
		rec := kvRec{Value: r.Value, Create: st.Rev, Mod: st.Rev, Version: 1}
		if ok {
			rec.Create, rec.Version = old.Create, old.Version+1
		}
		st.KVs[string(r.Key)] = rec
		resp.Revision = st.Rev
	})
	return resp, err
}

func (s *server) Delete(_ context.Context, r *enginev1.DeleteRequest) (*enginev1.DeleteResponse, error) {
	resp := &enginev1.DeleteResponse{}
	err := s.write(r.GetWriteId(), resp, func(st *state) {
		st.Rev++
		_, resp.Deleted = st.KVs[string(r.Key)]
		delete(st.KVs, string(r.Key))
		resp.Revision = st.Rev
	})
	return resp, err
}

func (s *server) CompareAndSwap(_ context.Context, r *enginev1.CompareAndSwapRequest) (*enginev1.CompareAndSwapResponse, error) {
	resp := &enginev1.CompareAndSwapResponse{}
	err := s.write(r.GetWriteId(), resp, func(st *state) {
		k := string(r.Key)
		old, exists := st.KVs[k]
		holds := (r.ExpectedValue == nil && !exists) || (r.ExpectedValue != nil && exists && string(old.Value) == string(r.ExpectedValue))
		resp.Succeeded = holds
		if holds {
			st.Rev++
			if r.NewValue == nil {
				delete(st.KVs, k)
			} else {
				rec := kvRec{Value: r.NewValue, Create: st.Rev, Mod: st.Rev, Version: 1}
				if exists {
					rec.Create, rec.Version = old.Create, old.Version+1
				}
				st.KVs[k] = rec
			}
		}
		if cur, ok := st.KVs[k]; ok {
			resp.Current = toProto(k, cur)
		}
		resp.Revision = st.Rev
	})
	return resp, err
}

func (s *server) Get(_ context.Context, r *enginev1.GetRequest) (*enginev1.GetResponse, error) {
	resp := &enginev1.GetResponse{}
	if s.stale {
		s.cacheMu.Lock()
		defer s.cacheMu.Unlock()
		if rec, ok := s.cache.KVs[string(r.Key)]; ok {
			resp.Kv = toProto(string(r.Key), rec)
		}
		return resp, nil
	}
	err := s.withState(func(st *state) bool {
		if rec, ok := st.KVs[string(r.Key)]; ok {
			resp.Kv = toProto(string(r.Key), rec)
		}
		return false
	})
	return resp, err
}

func (s *server) Leader(context.Context, *enginev1.LeaderRequest) (*enginev1.LeaderResponse, error) {
	return &enginev1.LeaderResponse{LeaderId: s.cfg.nodeID, LeaderAddr: s.cfg.clientAddr}, nil
}

func (s *server) Members(context.Context, *enginev1.MembersRequest) (*enginev1.MembersResponse, error) {
	resp := &enginev1.MembersResponse{LeaderId: s.cfg.nodeID}
	for _, m := range s.cfg.members {
		resp.Members = append(resp.Members, &enginev1.Member{Id: m.id, ClientAddr: m.clientAddr, Role: enginev1.MemberRole_VOTER})
	}
	return resp, nil
}

func main() {
	cfgPath := flag.String("config", "", "config file")
	flag.Parse()
	cfg, err := parseConfig(*cfgPath)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(cfg.dataDir, 0o755); err != nil {
		log.Fatal(err)
	}
	shared := filepath.Dir(filepath.Clean(cfg.dataDir))
	s := &server{
		cfg:       cfg,
		statePath: filepath.Join(shared, "fake-state.json"),
		lockPath:  filepath.Join(shared, "fake-state.lock"),
		stale:     os.Getenv("FAKE_DENGINE_STALE_READS") == "1" && cfg.nodeID != 1,
	}
	if s.stale {
		go func() {
			for {
				_ = s.withState(func(st *state) bool {
					s.cacheMu.Lock()
					s.cache = *st
					s.cacheMu.Unlock()
					return false
				})
				time.Sleep(300 * time.Millisecond)
			}
		}()
	}
	lis, err := net.Listen("tcp", cfg.clientAddr)
	if err != nil {
		log.Fatal(err)
	}
	g := grpc.NewServer()
	enginev1.RegisterKvServer(g, s)
	enginev1.RegisterClusterServer(g, s)
	log.Printf("fakeserver node %d serving on %s (stale reads: %v)", cfg.nodeID, cfg.clientAddr, s.stale)
	log.Fatal(g.Serve(lis))
}
