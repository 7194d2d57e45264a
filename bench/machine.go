package bench

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Machine describes where a run ran, from /proc where it exists.
type Machine struct {
	CPU       string `json:"cpu"`   // model name
	Cores     int    `json:"cores"` // logical CPUs
	MemoryGiB int    `json:"memory_gib,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	Go        string `json:"go"`
	OS        string `json:"os"`
	LoadStart string `json:"load_start,omitempty"` // /proc/loadavg's 1, 5 and 15 minute averages
	LoadEnd   string `json:"load_end,omitempty"`
	// LoadPeak is the highest 1-minute load average seen at the start of a
	// cell: the machine is shared, and more than its cores means the
	// numbers were measured under contention.
	LoadPeak float64 `json:"load_peak,omitempty"`
}

// sampleLoad raises LoadPeak to the current 1-minute load average.
func (m *Machine) sampleLoad() {
	if f := strings.Fields(readLoad()); len(f) > 0 {
		if v, err := strconv.ParseFloat(f[0], 64); err == nil && v > m.LoadPeak {
			m.LoadPeak = v
		}
	}
}

func readMachine() Machine {
	m := Machine{CPU: "unknown", Cores: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, LoadStart: readLoad()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					m.MemoryGiB = int((kb + 1<<19) >> 20)
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// readLoad returns the 1, 5 and 15 minute load averages, or "".
func readLoad() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
