//! Live views: when each trial finished (for the best-score-over-time chart) and the
//! server-sent event stream of a job's page.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use tokio::sync::broadcast;
use tokio_stream::Stream;

use super::data;
use crate::grpc::Server;

/// Updates of one job's page are sent at most this often (a burst of trials is one update).
const UPDATE_EVERY: Duration = Duration::from_millis(250);

pub struct Live {
    /// Per job, the wall-clock time each finished trial (in finish order) was first seen;
    /// `None` for trials finished before this process started.
    times: Mutex<HashMap<String, Vec<Option<u64>>>>,
    /// Changed job ids ("" = anything may have changed), after `times` is updated.
    changed: broadcast::Sender<String>,
}

impl Live {
    pub fn start(server: &Server) -> Arc<Live> {
        let (changed, _) = broadcast::channel(1024);
        let live = Arc::new(Live { times: Mutex::new(HashMap::new()), changed });
        let mut sub = server.subscribe();
        // Trials finished before now have no known time.
        server.read(|c| {
            let mut times = live.lock();
            for j in c.jobs() {
                times.insert(j.id.clone(), vec![None; j.trials_finished() as usize]);
            }
        });
        let (server, task_live) = (server.clone(), live.clone());
        tokio::spawn(async move {
            loop {
                let changed = match sub.recv().await {
                    Ok(c) => c,
                    Err(()) => return,
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                server.read(|c| {
                    let mut times = task_live.lock();
                    let ids: Vec<String> = match &changed {
                        Some(id) => vec![id.clone()],
                        None => c.jobs().map(|j| j.id.clone()).collect(),
                    };
                    for id in ids {
                        if let Some(j) = c.job(&id) {
                            let t = times.entry(id).or_default();
                            let n = j.trials_finished() as usize;
                            if t.len() < n {
                                t.resize(n, Some(now));
                            }
                        }
                    }
                });
                let _ = task_live.changed.send(changed.unwrap_or_default());
            }
        });
        live
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Option<u64>>>> {
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn finish_times(&self, job: &str) -> Vec<Option<u64>> {
        self.lock().get(job).cloned().unwrap_or_default()
    }

    /// The job page's stream: an `update` event (see [`data::leaderboard_since`]) whenever
    /// trials finished or the job changed, starting after the first `from` finished trials;
    /// it ends once the job is over.
    pub fn job_stream(
        self: &Arc<Live>,
        server: Server,
        job: String,
        from: usize,
    ) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
        let mut rx = self.changed.subscribe();
        let live = self.clone();
        let (tx, out) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(8);
        tokio::spawn(async move {
            let mut from = from;
            // The first update goes out at once: anything that changed since the page was made.
            let mut dirty = true;
            let mut tick = tokio::time::interval(UPDATE_EVERY);
            loop {
                tokio::select! {
                    r = rx.recv() => match r {
                        Ok(id) if id.is_empty() || id == job => dirty = true,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => dirty = true,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tick.tick() => {
                        if !dirty {
                            continue;
                        }
                        dirty = false;
                        let Some((update, count, done)) = server.read(|c| {
                            c.job(&job).map(|j| (data::leaderboard_since(j, &live, from), j.trials_finished() as usize, j.state.is_final()))
                        }) else {
                            return;
                        };
                        from = count;
                        let event = Event::default().event("update").data(update.to_string());
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                        if done {
                            let _ = tx.send(Ok(Event::default().event("done").data("{}"))).await;
                            return;
                        }
                    }
                }
            }
        });
        Sse::new(tokio_stream::wrappers::ReceiverStream::new(out)).keep_alive(KeepAlive::default())
    }
}
