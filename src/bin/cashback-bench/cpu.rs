//! Who used the CPU during a phase of a benchmark: the engine, nats-server,
//! the benchmark itself and the whole machine, from `/proc`. The benchmarks run on 2 cores shared
//! with the load generator (and, on a development machine, with whatever
//! else runs there), so a latency figure is only readable next to how much
//! CPU each side had; the load average says what else wanted it.

use std::time::{Duration, Instant};

/// The kernel's clock ticks per second, the unit of `/proc/<pid>/stat` and
/// `/proc/stat` times.
fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf(3) reads a constant of the system; no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// User plus system CPU ticks a process has used so far; 0 if unreadable.
fn process_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) is in parentheses and may hold spaces:
    // fields are counted after its closing one; utime and stime are fields
    // 14 and 15, the 12th and 13th after it.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    field(11).unwrap_or(0) + field(12).unwrap_or(0)
}

/// Busy and total CPU ticks of the whole machine so far, all cores (idle
/// and iowait are not busy; guest time is already inside user), and the
/// number of cores they are over.
fn machine_ticks() -> (u64, u64, usize) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0, 0);
    };
    let cores = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0, 0);
    };
    let t: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = t.iter().sum();
    let idle = t.get(3).copied().unwrap_or(0) + t.get(4).copied().unwrap_or(0);
    (total - idle.min(total), total, cores)
}

/// The 1-minute load average; NaN if unreadable.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// CPU use over one phase, in cores (1.0 = one core busy all the time).
#[derive(Clone, Copy, Debug)]
pub struct CpuUse {
    /// The engine process.
    pub engine: f64,
    /// The nats-server process.
    pub nats: f64,
    /// This benchmark's process (the load generator).
    pub bench: f64,
    /// Every process of the machine, these three included: the rest is
    /// what else ran.
    pub machine: f64,
    /// The 1-minute load average at the end of the phase.
    pub load: f64,
}

impl CpuUse {
    /// "engine 0.91, nats 0.55, bench 0.30, others 0.17; load 2.4".
    pub fn text(&self) -> String {
        format!(
            "engine {:.2}, nats {:.2}, bench {:.2}, others {:.2}; load {:.1}",
            self.engine,
            self.nats,
            self.bench,
            (self.machine - self.engine - self.nats - self.bench).max(0.0),
            self.load
        )
    }
}

/// Readings at the start of a phase.
pub struct CpuMeter {
    /// The engine's pid.
    engine: u32,
    /// nats-server's pid.
    nats: u32,
    /// Ticks of each, and of this process, at the start.
    engine_ticks: u64,
    nats_ticks: u64,
    bench_ticks: u64,
    /// The machine's (busy, total, cores) ticks at the start.
    machine: (u64, u64, usize),
    /// When the phase started.
    started: Instant,
}

impl CpuMeter {
    /// Starts measuring the engine's and nats-server's processes.
    pub fn start(engine: u32, nats: u32) -> CpuMeter {
        CpuMeter {
            engine,
            nats,
            engine_ticks: process_ticks(engine),
            nats_ticks: process_ticks(nats),
            bench_ticks: process_ticks(std::process::id()),
            machine: machine_ticks(),
            started: Instant::now(),
        }
    }

    /// What each used since the start.
    pub fn read(&self) -> CpuUse {
        let wall = self.started.elapsed().max(Duration::from_millis(1));
        let cores = |ticks: u64| ticks as f64 / ticks_per_sec() / wall.as_secs_f64();
        let (busy, total, cpus) = machine_ticks();
        let (busy, total) = (
            busy.saturating_sub(self.machine.0),
            total.saturating_sub(self.machine.1),
        );
        CpuUse {
            engine: cores(process_ticks(self.engine).saturating_sub(self.engine_ticks)),
            nats: cores(process_ticks(self.nats).saturating_sub(self.nats_ticks)),
            bench: cores(process_ticks(std::process::id()).saturating_sub(self.bench_ticks)),
            // Busy share of every core's time, times the cores.
            machine: if total == 0 {
                f64::NAN
            } else {
                busy as f64 / total as f64 * cpus as f64
            },
            load: load_average(),
        }
    }
}
