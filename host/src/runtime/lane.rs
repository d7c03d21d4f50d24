//! A tenant's worker: one thread with its own instance of each filter, taking
//! jobs in order (one dialog always lands on the same worker) and running the chain.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SendError, Sender, SyncSender, channel};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use siphost_sip::Message;

use super::FilterError;
use super::config::FailurePolicy;
use super::instance::{Action, FilterInstance, Hook, HookInput};
use super::state::{ReplyOrigin, TenantCounters, lock};
use super::tenant::Tenant;
use crate::proxy::hooks::{Decision, HookCall, HookContext, HookDone, HookResult};

/// Work for a tenant's worker.
// A hook call travels by value: boxing it would cost an allocation per call.
#[allow(clippy::large_enum_variant)]
pub enum Job {
    /// A hook call from the proxy; `counted` requests hold a place in the tenant's queue.
    Hook {
        call: HookCall,
        done: HookDone,
        counted: bool,
    },
    Timer {
        filter: usize,
        token: u64,
    },
    LocalReply {
        filter: usize,
        request_id: u64,
        reply: Message,
        origin: Option<ReplyOrigin>,
    },
    /// Remote registrations due now, for filter `filter` (first worker only).
    RegistrationsDue {
        filter: usize,
        due: Vec<crate::registrations::scheduler::Due>,
    },
    Rpc {
        filter: usize,
        method: String,
        params: String,
        answer: SyncSender<RpcResult>,
    },
}

impl Job {
    /// A hook or the reply to a filter's own request: one call the gate keeps quick. A
    /// filter timer, a batch of due registrations or an RPC may run much longer.
    fn is_short(&self) -> bool {
        matches!(self, Job::Hook { .. } | Job::LocalReply { .. })
    }
}

/// The instances a worker owns, tagged with the generation they were made from.
pub(crate) type Instances = Vec<Option<(u64, Box<dyn FilterInstance>)>>;

/// One worker's queue and its instances. The instances rest here between
/// calls, so that a hook call finding the worker idle can run on the caller's
/// thread instead (see `Tenant::submit`): whoever takes them runs alone, so one
/// dialog's calls still meet one instance in order.
pub struct Lane {
    /// Dropped with the tenant, which ends the worker.
    jobs: Sender<Job>,
    shared: Arc<LaneShared>,
}

/// How long a caller that finds the instances busy (run inline by another proxy thread, or
/// by the worker) waits for them before handing its call to the worker. A call takes a few
/// µs (the gate keeps slow filters off the proxy threads); a hand-off costs two thread
/// wake-ups, and while the worker has a call queued every later call of the lane queues
/// behind it, so one hand-off tends to bring more.
const INLINE_WAIT: Duration = Duration::from_micros(50);

/// What the worker and the callers share (not the queue's sender: the worker
/// must see the queue close when the tenant goes).
struct LaneShared {
    /// Jobs sent and not finished yet.
    pending: AtomicUsize,
    /// Those among them that may take long (see [`Job::is_short`]).
    pending_long: AtomicUsize,
    resting: Mutex<Resting>,
    returned: Condvar,
}

/// The instances while nobody runs them, and whether the worker waits for them: giving
/// them back wakes it only then (a wake-up is a system call even with nobody waiting).
struct Resting {
    instances: Option<Instances>,
    worker_waits: bool,
}

impl Lane {
    /// Queues a job for the worker; a refused job comes back.
    // By value, as the job travels: boxing it would cost an allocation per call.
    #[allow(clippy::result_large_err)]
    pub fn send(&self, job: Job) -> Result<(), SendError<Job>> {
        let long = !job.is_short();
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        if long {
            self.shared.pending_long.fetch_add(1, Ordering::AcqRel);
        }
        self.jobs.send(job).inspect_err(|_| {
            self.shared.finished(long);
        })
    }

    /// The instances, once the worker has nothing queued and nobody runs them, waited for
    /// up to [`INLINE_WAIT`]. A call queued earlier has run by then (the worker counts a
    /// job done only after it gave the instances back), so one dialog's calls still run in
    /// order. Waiting is worth it only behind one short call: with more queued, or a long
    /// job (a batch of due registrations), the caller hands off at once; spinning behind
    /// those was 13% of siphost's CPU while it refreshed registrations.
    pub(crate) fn take_if_idle(&self) -> Option<Instances> {
        self.take_within(INLINE_WAIT)
    }

    fn take_within(&self, wait: Duration) -> Option<Instances> {
        let mut since: Option<Instant> = None;
        loop {
            let pending = self.shared.pending.load(Ordering::Acquire);
            if pending == 0
                && let Some(instances) = lock(&self.shared.resting).instances.take()
            {
                return Some(instances);
            }
            if pending > 1
                || self.shared.pending_long.load(Ordering::Acquire) > 0
                || since.get_or_insert_with(Instant::now).elapsed() > wait
            {
                return None;
            }
            std::hint::spin_loop();
        }
    }

    pub(crate) fn put_back(&self, instances: Instances) {
        self.shared.put_back(instances);
    }
}

impl LaneShared {
    /// The instances, waiting while a caller runs them.
    fn take(&self) -> Instances {
        let mut resting = lock(&self.resting);
        loop {
            if let Some(instances) = resting.instances.take() {
                resting.worker_waits = false;
                return instances;
            }
            resting.worker_waits = true;
            resting = self
                .returned
                .wait(resting)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// A job is done (or was never queued).
    fn finished(&self, long: bool) {
        if long {
            self.pending_long.fetch_sub(1, Ordering::AcqRel);
        }
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    fn put_back(&self, instances: Instances) {
        let mut resting = lock(&self.resting);
        resting.instances = Some(instances);
        let wake = resting.worker_waits;
        drop(resting);
        if wake {
            self.returned.notify_one();
        }
    }
}

/// Starts worker `lane` of a tenant; it ends when the tenant is dropped.
pub fn spawn_lane(
    tenant: Weak<Tenant>,
    name: &str,
    lane: usize,
    instances: Instances,
) -> std::io::Result<Lane> {
    let (jobs, queue) = channel();
    let shared = Arc::new(LaneShared {
        pending: AtomicUsize::new(0),
        pending_long: AtomicUsize::new(0),
        resting: Mutex::new(Resting {
            instances: Some(instances),
            worker_waits: false,
        }),
        returned: Condvar::new(),
    });
    let own = shared.clone();
    std::thread::Builder::new()
        .name(format!("siphost-filter-{name}-{lane}"))
        .spawn(move || {
            lower_priority();
            Worker {
                lane,
                instances: Vec::new(),
            }
            .run(&tenant, &own, queue)
        })?;
    Ok(Lane { jobs, shared })
}

/// How much lower than the proxy's threads filter workers run (a nice
/// increment): a filter burning its CPU budget must not delay the proxy's
/// own message path, which every tenant shares.
pub const WORKER_NICE: i32 = 5;

/// Lowers the calling thread's priority by [`WORKER_NICE`] (Linux: the nice
/// value is per thread). Failing that, the thread runs at the normal priority.
pub(crate) fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        if libc::setpriority(libc::PRIO_PROCESS, tid, current + WORKER_NICE) != 0 {
            tracing::debug!("cannot lower a filter thread's priority");
        }
    }
}

/// What a finished job owes its caller.
// The hook result travels by value, as the call did: boxing it would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Hook(HookDone, HookResult),
    Rpc(SyncSender<RpcResult>, RpcResult),
}

type RpcResult = Result<String, FilterError>;

/// Runs calls on one lane's instances: the worker thread, or a caller that
/// found the lane idle.
pub(crate) struct Worker {
    pub lane: usize,
    pub instances: Instances,
}

impl Worker {
    fn run(mut self, tenant: &Weak<Tenant>, lane: &LaneShared, queue: Receiver<Job>) {
        while let Ok(job) = queue.recv() {
            let Some(tenant) = tenant.upgrade() else {
                return;
            };
            self.instances = lane.take();
            let long = !job.is_short();
            let answer = self.run_job(&tenant, job);
            lane.put_back(std::mem::take(&mut self.instances));
            lane.finished(long);
            // The answer goes out once the lane is free again, so the caller's
            // next call (the dialog's next message) may already find it idle.
            match answer {
                Some(Answer::Hook(done, result)) => done(result),
                Some(Answer::Rpc(answer, result)) => {
                    let _ = answer.send(result);
                }
                None => {}
            }
        }
    }

    /// Runs one job; what a caller waits for is returned, to be delivered
    /// after the instances are back.
    fn run_job(&mut self, tenant: &Arc<Tenant>, job: Job) -> Option<Answer> {
        match job {
            Job::Hook {
                call,
                done,
                counted,
            } => {
                let result = tenant
                    .inline
                    .timed_on_worker(|| self.run_hook(tenant, call));
                if counted {
                    tenant.finished_request();
                }
                return Some(Answer::Hook(done, result));
            }
            Job::Timer { filter, token } => {
                // A failure is counted and logged by `with_instance`; nobody waits for it.
                let _ = self.with_instance(tenant, filter, "on-timer", |i| i.timer(token));
            }
            Job::LocalReply {
                filter,
                request_id,
                mut reply,
                origin,
            } => {
                let _ = tenant.inline.timed_on_worker(|| {
                    self.with_instance(tenant, filter, "on-local-reply", |i| {
                        i.local_reply(request_id, &mut reply, origin)
                    })
                });
            }
            Job::RegistrationsDue { filter, due } => {
                // A failure is counted and logged; the records come back as stalled.
                let _ = self.with_instance(tenant, filter, "on-registration-due", |i| {
                    i.registrations_due(&due)
                });
            }
            Job::Rpc {
                filter,
                method,
                params,
                answer,
            } => {
                let result = self
                    .with_instance(tenant, filter, "rpc", |i| i.rpc(&method, &params))
                    .and_then(|r| r.map_err(FilterError::Rpc));
                return Some(Answer::Rpc(answer, result));
            }
        }
        None
    }

    /// Whether every filter's instance is of its current version, so a call
    /// makes none (a caller running inline must not).
    pub(crate) fn current(&self, tenant: &Tenant) -> bool {
        tenant
            .filters
            .iter()
            .zip(&self.instances)
            .all(|(slot, held)| {
                held.as_ref()
                    .is_some_and(|(generation, _)| *generation == slot.current.load().generation)
            })
    }

    /// The worker's instance of filter `index` at the current generation:
    /// its own, else the spare made ahead of time, else (the spare is not
    /// ready yet) one made here.
    fn instance(
        &mut self,
        tenant: &Arc<Tenant>,
        index: usize,
    ) -> Result<&mut Box<dyn FilterInstance>, FilterError> {
        let slot = &tenant.filters[index];
        let version = slot.current.load();
        let fresh = match &self.instances[index] {
            Some((generation, _)) if *generation == version.generation => None,
            _ => Some(
                match tenant.take_spare(slot, self.lane, version.generation) {
                    Some(spare) => spare,
                    None => {
                        TenantCounters::bump(&tenant.shared.counters.inline_instantiations);
                        version
                            .factory
                            .instantiate(&tenant.setup(slot, self.lane))
                            .inspect_err(|_| {
                                TenantCounters::bump(&tenant.shared.counters.instantiate_errors)
                            })?
                    }
                },
            ),
        };
        if let Some(instance) = fresh {
            self.instances[index] = Some((version.generation, instance));
            tenant.prepare_spare(index, self.lane);
        }
        match &mut self.instances[index] {
            Some((_, instance)) => Ok(instance),
            None => unreachable!("an instance was just installed"),
        }
    }

    /// Runs `f` on filter `index`; a failure is reported and drops the instance.
    pub(crate) fn with_instance<R>(
        &mut self,
        tenant: &Arc<Tenant>,
        index: usize,
        what: &str,
        f: impl FnOnce(&mut dyn FilterInstance) -> Result<R, FilterError>,
    ) -> Result<R, FilterError> {
        let Some(slot) = tenant.filters.get(index) else {
            return Err(FilterError::BadRequest(format!(
                "tenant {} has no filter {index}",
                tenant.name()
            )));
        };
        let result = self
            .instance(tenant, index)
            .and_then(|instance| f(instance.as_mut()));
        if let Err(e) = &result {
            self.instances[index] = None;
            tenant.report_failure(slot, what, e);
        }
        result
    }

    pub(crate) fn run_hook(&mut self, tenant: &Arc<Tenant>, call: HookCall) -> HookResult {
        match call {
            HookCall::Request { mut ctx, mut msg } => {
                let decision = self.run_chain(tenant, Hook::Request, &mut ctx, &mut msg, None);
                HookResult {
                    call: HookCall::Request { ctx, msg },
                    decision,
                }
            }
            HookCall::Reply { mut ctx, mut msg } => {
                let decision = self.run_chain(tenant, Hook::Reply, &mut ctx, &mut msg, None);
                HookResult {
                    call: HookCall::Reply { ctx, msg },
                    decision,
                }
            }
            HookCall::Failure {
                mut ctx,
                mut request,
                reply,
            } => {
                let decision =
                    self.run_chain(tenant, Hook::Failure, &mut ctx, &mut request, Some(&reply));
                HookResult {
                    call: HookCall::Failure {
                        ctx,
                        request,
                        reply,
                    },
                    decision,
                }
            }
        }
    }

    /// Runs the tenant's chain on one message and returns what the proxy must do.
    fn run_chain(
        &mut self,
        tenant: &Arc<Tenant>,
        hook: Hook,
        ctx: &mut HookContext,
        msg: &mut Message,
        failure_reply: Option<&Message>,
    ) -> Decision {
        let is_ack = msg.method().is_some_and(|m| m.as_str() == "ACK");
        let original_next_hop = ctx.next_hop.clone();
        let mut reply_copy = failure_reply.cloned();
        for index in 0..tenant.filters.len() {
            TenantCounters::bump(&tenant.shared.counters.calls);
            let outcome = self.with_instance(tenant, index, hook.name(), |instance| {
                instance.hook(&mut HookInput {
                    hook,
                    ctx,
                    msg,
                    failure_reply: reply_copy.as_mut(),
                })
            });
            let action = match outcome {
                Ok(action) => action,
                Err(_) => match (tenant.policy, hook) {
                    (FailurePolicy::FailOpen, _) | (FailurePolicy::FailClosed, Hook::Failure) => {
                        continue;
                    }
                    (FailurePolicy::FailClosed, Hook::Request) if !is_ack => {
                        return Decision::Reply {
                            code: 500,
                            reason: "Filter Failure".into(),
                            headers: Vec::new(),
                            body: Default::default(),
                        };
                    }
                    (FailurePolicy::FailClosed, _) => return Decision::Drop,
                },
            };
            match (action, hook) {
                (Action::Continue, _) => {}
                (Action::Forward(uri), Hook::Request | Hook::Failure) => ctx.next_hop = Some(uri),
                (
                    Action::Reply {
                        code,
                        reason,
                        headers,
                        body,
                    },
                    Hook::Request,
                ) => {
                    if is_ack {
                        return Decision::Drop;
                    }
                    return Decision::Reply {
                        code,
                        reason,
                        headers,
                        body,
                    };
                }
                (Action::Drop, Hook::Request | Hook::Reply) => return Decision::Drop,
                (Action::Resend(next_hop), Hook::Failure) => {
                    return Decision::Resend { next_hop };
                }
                (other, _) => {
                    tracing::warn!(tenant = tenant.name(), filter = &*tenant.filters[index].label, hook = hook.name(), action = ?other, "action not valid here, ignored");
                }
            }
        }
        match &ctx.next_hop {
            Some(hop) if ctx.next_hop != original_next_hop => Decision::Forward {
                next_hop: hop.clone(),
            },
            _ => Decision::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

    fn lane() -> Lane {
        let (jobs, _queue) = channel();
        Lane {
            jobs,
            shared: Arc::new(LaneShared {
                pending: AtomicUsize::new(0),
                pending_long: AtomicUsize::new(0),
                resting: Mutex::new(Resting {
                    instances: Some(Vec::new()),
                    worker_waits: false,
                }),
                returned: Condvar::new(),
            }),
        }
    }

    /// Long enough that the other thread's hand-back lands inside it on a loaded machine.
    const PATIENT: Duration = Duration::from_secs(10);

    #[test]
    fn a_caller_waits_for_instances_another_thread_runs_inline() {
        let lane = Arc::new(lane());
        let held = lane.take_if_idle().expect("idle at first");
        assert!(lane.take_within(Duration::ZERO).is_none(), "taken already");
        let waiter = {
            let lane = lane.clone();
            thread::spawn(move || lane.take_within(PATIENT))
        };
        thread::sleep(Duration::from_millis(20));
        lane.put_back(held);
        assert!(waiter.join().expect("waiter").is_some());
    }

    #[test]
    fn a_caller_waits_for_the_workers_queued_call_to_finish_first() {
        let lane = Arc::new(lane());
        // The worker has a call queued and is running it.
        lane.shared.pending.fetch_add(1, Ordering::AcqRel);
        let running = lane.shared.take();
        let waiter = {
            let lane = lane.clone();
            thread::spawn(move || lane.take_within(PATIENT))
        };
        thread::sleep(Duration::from_millis(20));
        // Given back but still counted: the caller must not take them yet.
        lane.put_back(running);
        thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished(), "took them while a call was pending");
        lane.shared.pending.fetch_sub(1, Ordering::AcqRel);
        assert!(waiter.join().expect("waiter").is_some());
    }

    #[test]
    fn a_caller_does_not_wait_behind_a_queue_or_a_long_job() {
        let lane = Arc::new(lane());
        // Frees the lane after a while: a caller that waited would then get the instances.
        let free_later = |running: Instances, jobs: usize, long: bool| {
            let lane = lane.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(500));
                lane.shared.put_back(running);
                for _ in 0..jobs {
                    lane.shared.finished(long);
                }
            })
        };
        // Two calls queued, the worker running the first.
        let freer = free_later(lane.shared.take(), 2, false);
        lane.shared.pending.fetch_add(2, Ordering::AcqRel);
        assert!(lane.take_within(PATIENT).is_none(), "waited behind a queue");
        freer.join().expect("freer");
        // One job, but a long one (a batch of due registrations).
        let freer = free_later(lane.shared.take(), 1, true);
        lane.shared.pending.fetch_add(1, Ordering::AcqRel);
        lane.shared.pending_long.fetch_add(1, Ordering::AcqRel);
        assert!(
            lane.take_within(PATIENT).is_none(),
            "waited behind a long job"
        );
        freer.join().expect("freer");
        assert!(lane.take_within(Duration::ZERO).is_some(), "idle again");
    }

    #[test]
    fn a_worker_waiting_for_instances_is_woken_when_they_come_back() {
        let lane = Arc::new(lane());
        let held = lane.take_if_idle().expect("idle at first");
        let worker = {
            let lane = lane.clone();
            thread::spawn(move || lane.shared.take())
        };
        while !lock(&lane.shared.resting).worker_waits {
            thread::sleep(Duration::from_millis(1));
        }
        lane.put_back(held);
        worker.join().expect("worker woken");
        assert!(!lock(&lane.shared.resting).worker_waits);
    }
}
