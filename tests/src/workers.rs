//! Background threads that run until a stop flag is raised: the servers,
//! sinks and captures of the harness and of the benchmark. Dropping a
//! [`Workers`] raises the flag and joins its threads, so they end with
//! whatever started them, also when a test panics.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// Threads sharing one stop flag; each returns a `T` when it sees the flag.
#[derive(Debug)]
pub struct Workers<T: Send + 'static = ()> {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<T>>,
}

impl<T: Send + 'static> Default for Workers<T> {
    fn default() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }
}

impl<T: Send + 'static> Workers<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a thread named `name` running `body` with the stop flag. The
    /// body must check the flag often (every poll of its socket) and return
    /// once it is raised: how long that takes bounds how long stopping takes.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        body: impl FnOnce(&AtomicBool) -> T + Send + 'static,
    ) -> io::Result<()> {
        let stop = self.stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&stop))?;
        self.threads.push(thread);
        Ok(())
    }

    /// Raises the flag and joins the threads; returns what each returned,
    /// in the order they were started (a thread that panicked is left out).
    pub fn stop(mut self) -> Vec<T> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Vec<T> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .drain(..)
            .filter_map(|t| t.join().ok())
            .collect()
    }
}

impl<T: Send + 'static> Drop for Workers<T> {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    use super::*;

    /// Runs until the flag is raised or 5 s pass; returns whether it saw the flag.
    fn until_stopped(stop: &AtomicBool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if stop.load(Ordering::SeqCst) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn stop_raises_the_flag_and_collects_in_order() {
        let mut w = Workers::new();
        for i in 0..3u32 {
            w.spawn(format!("worker-{i}"), move |stop| (i, until_stopped(stop)))
                .unwrap();
        }
        assert_eq!(w.stop(), [(0, true), (1, true), (2, true)]);
    }

    #[test]
    fn drop_stops_and_joins() {
        let saw_stop = Arc::new(AtomicUsize::new(0));
        {
            let mut w = Workers::new();
            for _ in 0..2 {
                let saw_stop = saw_stop.clone();
                w.spawn("worker", move |stop| {
                    if until_stopped(stop) {
                        saw_stop.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .unwrap();
            }
        }
        // Joined in drop: both threads have finished by now.
        assert_eq!(saw_stop.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_panicking_thread_is_left_out() {
        let mut w = Workers::new();
        w.spawn("panics", |_| -> u32 { panic!("on purpose") })
            .unwrap();
        w.spawn("returns", |stop| u32::from(until_stopped(stop)))
            .unwrap();
        assert_eq!(w.stop(), [1]);
    }
}
