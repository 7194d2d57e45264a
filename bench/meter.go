package bench

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/cambiumdb/cambium/api"
)

// meter counts the bytes on the TCP connections of the clients it makes,
// both ways, HTTP headers included: what a client pays on the wire.
type meter struct {
	up, down  atomic.Int64
	transport *http.Transport
}

func newMeter() *meter {
	m := &meter{}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	m.transport = &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countingConn{Conn: c, m: m}, nil
		},
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true, // count what the protocol sends, not gzip's
	}
	return m
}

// client returns an API client whose traffic the meter counts.
func (m *meter) client(url string) *api.Client {
	c := api.NewClient(url)
	c.HTTP = &http.Client{Transport: m.transport}
	return c
}

// reset zeroes the counters.
func (m *meter) reset() {
	m.up.Store(0)
	m.down.Store(0)
}

func (m *meter) close() { m.transport.CloseIdleConnections() }

type countingConn struct {
	net.Conn
	m *meter
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.m.down.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.m.up.Add(int64(n))
	return n, err
}
