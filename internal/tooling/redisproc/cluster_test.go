package redisproc

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// crc16 is the CRC16-CCITT (XMODEM) that Redis Cluster hashes keys with.
func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// keysForEverySlot returns one key per hash slot: keys[slot] hashes to slot.
func keysForEverySlot() []string {
	keys := make([]string, 16384)
	left := len(keys)
	for i := 0; left > 0; i++ {
		k := fmt.Sprintf("k:%d", i)
		if s := crc16([]byte(k)) % 16384; keys[s] == "" {
			keys[s] = k
			left--
		}
	}
	return keys
}

// writeAll sets every key in one pipeline (go-redis splits it per node)
// and returns the first error.
func writeAll(ctx context.Context, c *redis.ClusterClient, keys []string, v string) error {
	cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Set(ctx, k, v, 0)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, cmd := range cmds {
		if cmd.Err() != nil {
			return cmd.Err()
		}
	}
	return nil
}

func TestKeysForEverySlot(t *testing.T) {
	t.Parallel()
	// The slots Redis documents for these keys (CLUSTER KEYSLOT).
	for k, want := range map[string]uint16{"a": 15495, "b": 3300, "foo": 12182, "123456789": 12739} {
		if got := crc16([]byte(k)) % 16384; got != want {
			t.Errorf("slot(%q) = %d, want %d", k, got, want)
		}
	}
}

func TestClusterFailover(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		opts ClusterOptions
	}{
		{"plain", ClusterOptions{}},
		{"password", ClusterOptions{Password: "cluster-secret"}},
	}
	keys := keysForEverySlot()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := tc.opts
			opts.Dir = t.TempDir()
			noProcsAfter(t, opts.Dir)
			start := time.Now()
			cl, err := StartCluster(t.Context(), opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cl.Close)
			if p := procsUnder(t, opts.Dir); len(p) != 6 {
				t.Fatalf("%d processes under the group's directory, want 6: %q", len(p), p)
			}
			t.Logf("cluster ready in %v", time.Since(start).Round(time.Millisecond))
			if len(cl.Masters()) != 3 || len(cl.Replicas()) != 3 || len(cl.Addrs) != 6 {
				t.Fatalf("masters %d, replicas %d, addrs %v; want 3, 3, 6", len(cl.Masters()), len(cl.Replicas()), cl.Addrs)
			}

			c := redis.NewClusterClient(&redis.ClusterOptions{
				Addrs:        cl.Addrs,
				Password:     cl.Password,
				DialTimeout:  time.Second,
				ReadTimeout:  time.Second,
				WriteTimeout: time.Second,
				// go-redis reloads its slot map on MOVED, and otherwise
				// only when it is this old (60s by default): a dead
				// master refuses connections and sends no MOVED, so
				// without it the client keeps dialling the dead master
				// for up to a minute.
				ClusterStateReloadInterval: time.Second,
			})
			t.Cleanup(func() { _ = c.Close() })
			ctx := t.Context()
			if err := writeAll(ctx, c, keys, "v1"); err != nil {
				t.Fatalf("write every slot: %v", err)
			}
			// Every master holds its share.
			for _, m := range cl.Masters() {
				n := redis.NewClient(&redis.Options{Addr: m.Addr, Password: cl.Password})
				size, err := n.DBSize(ctx).Result()
				n.Close()
				if err != nil || size < 1000 {
					t.Errorf("master %s holds %d keys (%v), want thousands", m.Addr, size, err)
				}
			}
			// Keys with one hash tag share a slot: a multi-key command works.
			if err := c.MSet(ctx, "{job}:a", "1", "{job}:b", "2").Err(); err != nil {
				t.Fatalf("MSET on one tag: %v", err)
			}
			if got, err := c.MGet(ctx, "{job}:a", "{job}:b").Result(); err != nil || fmt.Sprint(got) != "[1 2]" {
				t.Errorf("MGET on one tag = %v, %v; want [1 2]", got, err)
			}
			// "a" and "b" hash to different slots: Redis refuses.
			if err := c.MSet(ctx, "a", "1", "b", "2").Err(); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
				t.Errorf("cross-slot MSET: %v, want CROSSSLOT", err)
			}

			victim := cl.Masters()[1]
			victim.Kill()
			killed := time.Now()
			fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			addr, err := cl.WaitFailover(fctx, victim.Addr)
			if err != nil {
				t.Fatal(err)
			}
			if addr != cl.Replicas()[1].Addr {
				t.Errorf("new master %s, want the victim's replica %s", addr, cl.Replicas()[1].Addr)
			}
			t.Logf("failover in %v", time.Since(killed).Round(time.Millisecond))
			// The same client finds the new master by itself.
			eventually(t, 15*time.Second-time.Since(killed), "write every slot after failover", func(ctx context.Context) error {
				return writeAll(ctx, c, keys, "v2")
			})
			t.Logf("client writes every slot again %v after the kill", time.Since(killed).Round(time.Millisecond))
			if got, err := c.Get(ctx, keys[8000]).Result(); err != nil || got != "v2" {
				t.Errorf("GET after failover = %q, %v; want v2", got, err)
			}
			if _, err := cl.WaitFailover(ctx, victim.Addr); err == nil {
				t.Error("WaitFailover on a node that is no longer a master: no error")
			}
		})
	}
}
