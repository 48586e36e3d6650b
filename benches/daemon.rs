//! Daemon benchmark: 100 scheduled pipelines loaded, then idle. Prints the daemon's CPU time
//! over an idle stretch (it should sleep between fires: no polling), its resident memory, how
//! long a pipeline edit takes to be in effect, and how late after its second a fire of an
//! every-second pipeline starts.
//!
//! ```text
//! cargo bench --bench daemon -- --pipelines 100 --idle-seconds 10
//! ```
//!
//! Linux only: CPU and memory are read from `/proc/<pid>`.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn argument(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|arg| arg == name)
        .and_then(|index| args.get(index + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU seconds of a process (`/proc/<pid>/stat`, fields 14 and 15).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields count from after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|ticks| ticks.iter().filter_map(|t| t.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// A `/proc/<pid>/status` value in KiB, e.g. `VmRSS`.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}:")))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

fn write_pipeline(dir: &Path, index: u64, hour: u64) -> std::io::Result<()> {
    std::fs::write(
        dir.join(format!("pipeline_{index:03}.yaml")),
        format!(
            "connection: {{account_id: BENCH, passcode_file: passcode, endpoint: \"http://127.0.0.1:9\"}}\nsource: {{path: events.csv}}\ntarget: {{entity: user_events}}\nschedule: {{cron: \"{} {hour} * * *\", timezone: Asia/Kolkata}}\n",
            index % 60
        ),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pipelines = argument("--pipelines", 100);
    let idle_seconds = argument("--idle-seconds", 10);
    let tapline = env!("CARGO_BIN_EXE_tapline");
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("passcode"), "bench")?;
    std::fs::write(
        dir.path().join("events.csv"),
        "identity,evtName\nu1,Viewed\n",
    )?;
    // Fires far from now: the daemon has nothing to do but wait.
    let hour = (chrono_hour() + 12) % 24;
    for index in 0..pipelines {
        write_pipeline(dir.path(), index, hour)?;
    }
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path)?;
    socket.set_read_timeout(Some(Duration::from_secs(60)))?;
    let log_path = dir.path().join("daemon.log");
    let started = Instant::now();
    let mut daemon = Command::new(tapline)
        .args(["daemon", "--dir", "."])
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("TAPLINE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    let pid = daemon.id();
    let mut buffer = [0; 4096];
    loop {
        let size = socket.recv(&mut buffer)?;
        if String::from_utf8_lossy(&buffer[..size]).contains("READY=1") {
            break;
        }
    }
    let load = started.elapsed();
    // Let start-up settle, then measure an idle stretch.
    std::thread::sleep(Duration::from_secs(1));
    let cpu_before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(idle_seconds));
    let idle_cpu = cpu_seconds(pid) - cpu_before;
    let rss = status_kib(pid, "VmRSS");
    let peak = status_kib(pid, "VmHWM");

    // An edit: the first pipeline moves its fire to another minute.
    let edited = Instant::now();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("pipeline_000.yaml"))?;
    writeln!(file, "description: edited")?;
    drop(file);
    write_pipeline(dir.path(), 0, (hour + 1) % 24)?;
    let mut applied = None;
    while edited.elapsed() < Duration::from_secs(10) {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("schedule changed") {
            applied = Some(edited.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Fires: an every-second pipeline, five fires; each fire is logged as it happens.
    std::fs::write(
        dir.path().join("every_second.yaml"),
        "connection: {account_id: BENCH, passcode_file: passcode, endpoint: \"http://127.0.0.1:9\"}\nsource: {path: events.csv}\ntarget: {entity: user_events}\nschedule: {cron: \"* * * * * *\"}\n",
    )?;
    let fires_started = Instant::now();
    let mut lateness_ms: Vec<f64> = Vec::new();
    while lateness_ms.len() < 5 && fires_started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        lateness_ms = log
            .lines()
            .filter(|line| line.contains("pipeline=every_second"))
            .filter(|line| line.contains("run starting") || line.contains("fire skipped"))
            .filter_map(fraction_of_second_ms)
            .collect();
    }
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = daemon.wait();

    println!("pipelines         {pipelines} scheduled, loaded and READY in {load:.2?}");
    println!(
        "idle CPU          {idle_cpu:.2} s over {idle_seconds} s ({:.2}%)",
        100.0 * idle_cpu / idle_seconds as f64
    );
    println!(
        "memory            RSS {:.1} MiB, peak {:.1} MiB",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    match applied {
        Some(latency) => println!("edit in effect    {latency:.2?} after the write"),
        None => println!("edit in effect    not within 10 s"),
    }
    lateness_ms.sort_by(f64::total_cmp);
    match (lateness_ms.first(), lateness_ms.last()) {
        (Some(min), Some(max)) => println!(
            "fires             {} started {min:.1} / {:.1} / {max:.1} ms (min / median / max) after their second",
            lateness_ms.len(),
            lateness_ms[lateness_ms.len() / 2]
        ),
        _ => println!("fires             none seen within 20 s"),
    }
    Ok(())
}

/// The milliseconds past the whole second of a log line's timestamp
/// (`2026-12-01T20:27:15.320767Z  INFO ...`).
fn fraction_of_second_ms(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let fraction = stamp.strip_suffix('Z')?.rsplit_once('.')?.1;
    let digits = fraction.len() as i32;
    Some(fraction.parse::<f64>().ok()? / 10f64.powi(digits) * 1000.0)
}

/// The current UTC hour, from the system clock.
fn chrono_hour() -> u64 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    (seconds / 3600) % 24
}
