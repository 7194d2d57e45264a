package replica

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// holdEnv names the replica TestHelperHoldReplica holds open in a child
// process.
const holdEnv = "CAMBIUM_TEST_HOLD_REPLICA"

// TestHelperHoldReplica is the child of TestReplica_OpenLockedByOtherProcess:
// it opens the replica named by holdEnv, commits a row, says "ready" and
// keeps the replica open until its stdin is closed. Without holdEnv it does
// nothing.
func TestHelperHoldReplica(t *testing.T) {
	path := os.Getenv(holdEnv)
	if path == "" {
		return
	}
	r, db := mustOpen(t, path)
	mustExec(t, db, "CREATE TABLE t(v TEXT)")
	mustExec(t, db, "INSERT INTO t VALUES('child')")
	os.Stdout.WriteString("ready\n")
	io.Copy(io.Discard, os.Stdin)
	db.Close()
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestReplica_OpenLockedByOtherProcess: the sidecar is held in exclusive
// locking mode, so Open of a replica another process has open fails with
// ErrAlreadyOpen after the busy timeout instead of sharing it; once that
// process closes the replica, Open succeeds and sees its commit.
func TestReplica_OpenLockedByOtherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldReplica$")
	cmd.Env = append(os.Environ(), holdEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("child: %q, %v", line, err)
	}

	defer func(d time.Duration) { sidecarBusyTimeout = d }(sidecarBusyTimeout)
	sidecarBusyTimeout = 100 * time.Millisecond
	r, err := Open(context.Background(), path, Options{Volume: "test"})
	if err == nil {
		r.Close(context.Background())
		t.Fatal("Open of a replica open in another process succeeded")
	}
	if !errors.Is(err, ErrAlreadyOpen) {
		t.Fatalf("Open: %v, want ErrAlreadyOpen", err)
	}

	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	_, db := mustOpen(t, path)
	if n := mustCount(t, db, "SELECT count(*) FROM t WHERE v = 'child'"); n != 1 {
		t.Fatalf("%d rows of the child's commit, want 1", n)
	}
}

// TestReplica_OpenTwice: a second Open in the same process fails at once,
// before it touches the files.
func TestReplica_OpenTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	mustOpen(t, path)
	start := time.Now()
	r, err := Open(context.Background(), path, Options{Volume: "test"})
	if err == nil {
		r.Close(context.Background())
		t.Fatal("second Open succeeded")
	}
	if !errors.Is(err, ErrAlreadyOpen) {
		t.Fatalf("second Open: %v, want ErrAlreadyOpen", err)
	}
	if d := time.Since(start); d > sidecarBusyTimeout/2 {
		t.Fatalf("second Open took %v", d)
	}
}
