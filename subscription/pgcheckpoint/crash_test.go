package pgcheckpoint_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/subscription/pgcheckpoint"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
)

const (
	crashEnv        = "SOURCED_PGCHECKPOINT_CRASH_CHILD"
	crashLease      = 2 * time.Second
	crashPartitions = 8
)

// runCrashChild is a consumer process of TestCrashGroup: a member of the
// group "crash" that applies the PostgreSQL transport's feed to a read
// model in PostgreSQL, exactly once, until it is killed.
func runCrashChild() bool {
	spec := os.Getenv(crashEnv)
	if spec == "" {
		return false
	}
	f := strings.Fields(spec) // url, transport schema, checkpoint schema, member
	if err := crashConsume(f[0], f[1], f[2], f[3]); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
	return true
}

func crashConsume(url, trSchema, cpSchema, member string) error {
	ctx := context.Background()
	tr, err := postgres.Open(ctx, url, postgres.WithSchema(trSchema), postgres.WithSequencerInterval(20*time.Millisecond))
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	s, err := pgcheckpoint.New(ctx, pool, pgcheckpoint.WithSchema(cpSchema), pgcheckpoint.WithLeaseTime(crashLease))
	if err != nil {
		return err
	}
	model := cpSchema + ".model"
	fmt.Println("ready")
	return group.Run(ctx, s, "crash", member, crashPartitions, func(p transport.Partition, fence group.Fence) (*subscription.Subscription, error) {
		cps := s.WithFence(fence)
		sub, err := subscription.New(tr, "crash", cps, subscription.Feed("order"), subscription.Partition(p.Count, p.Number),
			subscription.Wait(time.Second))
		if err != nil {
			return nil, err
		}
		sub.OnEntry(cps.Apply(sub.Name(), func(ctx context.Context, tx pgx.Tx, e transport.FeedEntry) error {
			_, err := tx.Exec(ctx, "INSERT INTO "+model+" (seq, member, applied) VALUES ($1, $2, 1) "+
				"ON CONFLICT (seq) DO UPDATE SET applied = model.applied + 1", e.Sequence, member)
			return err
		}))
		return sub, nil
	}, group.Every(crashLease/4), group.GiveUpAfter(crashLease*3/4))
}

type crashChild struct {
	cmd    *exec.Cmd
	member string
}

// TestCrashGroup: 4 consumer processes in one group share 8 partitions
// of the PostgreSQL transport's feed while 32 writers store; each round one
// consumer is SIGKILLed (and started again) and another SIGSTOPped past
// its lease, then resumed. At the end every stored batch is in the read
// model exactly once. It reports how long the live members took to own
// the killed one's partitions (failover).
func TestCrashGroup(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	ctx := context.Background()
	p := pool(t)
	url := dbURL
	trSchema := fmt.Sprintf("crash_tr%d_%d", os.Getpid(), schemas.Add(1))
	tr, err := postgres.Open(ctx, url, postgres.WithSchema(trSchema), postgres.WithSequencerInterval(20*time.Millisecond))
	require.NoError(t, err)
	defer tr.Close()
	s, _ := fresh(t, pgcheckpoint.WithLeaseTime(crashLease))
	_, err = p.Exec(ctx, "CREATE TABLE "+s.Schema()+".model (seq bigint PRIMARY KEY, member text NOT NULL, applied int NOT NULL)")
	require.NoError(t, err)

	exe, err := os.Executable()
	require.NoError(t, err)
	start := func(member string) *crashChild {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"="+strings.Join([]string{url, trSchema, s.Schema(), member}, " "))
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		line, err := bufio.NewReader(out).ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "ready\n", line)
		return &crashChild{cmd: cmd, member: member}
	}
	children := []*crashChild{start("c0"), start("c1"), start("c2"), start("c3")}
	defer func() {
		for _, c := range children {
			_ = c.cmd.Process.Signal(syscall.SIGCONT)
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
	}()

	var stored atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				data, _ := json.Marshal(map[string]int{"amount": rng.IntN(100)})
				if err := tr.Store(ctx, transport.Ref{Type: "order", ID: uuid.NewString()}, []transport.Event{{EventType: "OrderPaid", Data: data}}, transport.Any); err == nil {
					stored.Add(1)
				}
				time.Sleep(time.Duration(10+rng.IntN(30)) * time.Millisecond)
			}
		}()
	}

	// owners returns the members that hold live leases, by partition.
	owners := func() map[int]string {
		rows, err := p.Query(ctx, "SELECT part, member FROM "+s.Schema()+".leases WHERE grp = 'crash' AND expires_at > now() AND owner IS NOT NULL")
		require.NoError(t, err)
		defer rows.Close()
		m := map[int]string{}
		for rows.Next() {
			var part int
			var member string
			require.NoError(t, rows.Scan(&part, &member))
			m[part] = member
		}
		return m
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 99))
	var failovers []time.Duration
	for round := range 3 {
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		k := rng.IntN(len(children))
		killed := children[k]
		require.NoError(t, killed.cmd.Process.Kill())
		_ = killed.cmd.Wait()
		killedAt := time.Now()
		for {
			o := owners()
			ok := len(o) == crashPartitions
			for _, m := range o {
				if m == killed.member {
					ok = false
				}
			}
			if ok {
				break
			}
			require.Less(t, time.Since(killedAt), 30*time.Second, "round %d: the killed member's partitions were never taken over", round)
			time.Sleep(10 * time.Millisecond)
		}
		failovers = append(failovers, time.Since(killedAt))
		children[k] = start(killed.member)

		st := children[(k+1)%len(children)]
		require.NoError(t, st.cmd.Process.Signal(syscall.SIGSTOP))
		time.Sleep(crashLease + time.Second) // past its lease
		require.NoError(t, st.cmd.Process.Signal(syscall.SIGCONT))
	}
	close(stop)
	wg.Wait()
	want := stored.Load()
	// The consumers drain at their own pace, which a loaded machine slows
	// down: the wait ends when every batch is in, or when nothing more
	// arrived for 30 s (a batch lost for good), not at a fixed time.
	var rows, most, before int64
	progressed := time.Now()
	for {
		require.NoError(t, p.QueryRow(ctx, "SELECT count(*), coalesce(max(applied), 0) FROM "+s.Schema()+".model").Scan(&rows, &most))
		if rows > before {
			before, progressed = rows, time.Now()
		}
		if rows >= want || time.Since(progressed) > 30*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	assert.Equal(t, want, rows, "every stored batch applied")
	assert.Equal(t, int64(1), most, "no batch applied twice")
	o := owners()
	assert.Len(t, o, crashPartitions, "every partition owned")
	t.Logf("%d batches stored and applied once; failover after SIGKILL (lease %s): %v", want, crashLease, failovers)
}
