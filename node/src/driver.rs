//! The one event loop both binaries run: it feeds a sans-IO state machine from
//! the [`Hub`] and the clock, and sends what the machine polls.
//!
//! Per turn the loop follows the machines' documented call order: drain
//! `poll_event` (handing each event to the [`Role`]), then drain
//! `poll_transmit` (encoding each envelope with the protocol's framing and
//! queueing it on the peer's link), then stop if the role or the machine says
//! so, else wait for the next network event or the machine's `next_deadline`,
//! whichever comes first, and call `handle_message` / `peer_connected` /
//! `peer_lost` / `handle_timeout` accordingly. Before waiting, deferred
//! computation the machine reports is started: work it hands out
//! (`poll_work`, the coordinator's decryption of a round's sum) runs on a
//! blocking thread while the loop keeps relaying and handling messages, and
//! comes back through `handle_work_done`; work it keeps (`has_pending_work`,
//! a hospital's encryption ahead of its predecessor's sum) is done on the
//! spot with `handle_pending_work`. Either way it overlaps with the peers'
//! work on what was just sent.
//!
//! Events are drained before transmits so that a hospital learns its ring's
//! addresses (an event) before it sends to a ring peer (a transmit).
//!
//! What differs between the coordinator and a hospital (what to do with each
//! event, whom to dial when a message has no link yet, what a failed dial
//! means) is the [`Role`]'s business; the loop itself knows neither.

use std::time::Instant;

use protocol::{
    decode_payload, encode_frame, CoordinatorEvent, CoordinatorMachine, DecryptionDone,
    DecryptionWork, Envelope, HospitalEvent, HospitalMachine, PeerLimits,
};
use tokio::sync::mpsc::Receiver;

use crate::transport::{Hub, NetEvent};

/// What the loop needs of a state machine: the quinn-proto-style surface that
/// [`CoordinatorMachine`] and [`HospitalMachine`] both have.
pub trait Machine {
    /// What the machine reports to its driver.
    type Event;
    /// Feeds one authenticated message from peer `from`.
    fn handle_message(&mut self, now: Instant, from: &str, env: Envelope) -> protocol::Result<()>;
    /// Tells the machine that its deadline has passed.
    fn handle_timeout(&mut self, now: Instant);
    /// Tells the machine that `peer` has a live link now.
    fn peer_connected(&mut self, now: Instant, peer: &str);
    /// Tells the machine that `peer`'s last link went down.
    fn peer_lost(&mut self, now: Instant, peer: &str);
    /// The next message to send, with its recipient.
    fn poll_transmit(&mut self) -> Option<(String, Envelope)>;
    /// The next event for the driver.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// When `handle_timeout` is due.
    fn next_deadline(&self) -> Option<Instant>;
    /// Whether the machine has nothing more to do.
    fn is_done(&self) -> bool;
    /// Whether the machine holds deferred computation to do now, on the
    /// loop's thread. None by default.
    fn has_pending_work(&self) -> bool {
        false
    }
    /// Does that computation (after the transmits were sent).
    fn handle_pending_work(&mut self, _now: Instant) {}
    /// Deferred computation the loop runs on a blocking thread while it
    /// goes on relaying and handling messages.
    type Work: Send + 'static;
    /// What [`run_work`](Machine::run_work) gives back.
    type Done: Send + 'static;
    /// The next such work, if any (after the transmits were sent).
    fn poll_work(&mut self) -> Option<Self::Work>;
    /// Runs it (on the blocking thread).
    fn run_work(work: Self::Work) -> Self::Done;
    /// Hands its result back to the machine.
    fn handle_work_done(&mut self, now: Instant, done: Self::Done);
}

macro_rules! impl_machine {
    ($machine:ty, $event:ty, { $($deferred:tt)* }) => {
        impl Machine for $machine {
            type Event = $event;
            $($deferred)*
            fn handle_message(
                &mut self,
                now: Instant,
                from: &str,
                env: Envelope,
            ) -> protocol::Result<()> {
                <$machine>::handle_message(self, now, from, env)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$machine>::handle_timeout(self, now)
            }
            fn peer_connected(&mut self, now: Instant, peer: &str) {
                <$machine>::peer_connected(self, now, peer)
            }
            fn peer_lost(&mut self, now: Instant, peer: &str) {
                <$machine>::peer_lost(self, now, peer)
            }
            fn poll_transmit(&mut self) -> Option<(String, Envelope)> {
                <$machine>::poll_transmit(self)
            }
            fn poll_event(&mut self) -> Option<$event> {
                <$machine>::poll_event(self)
            }
            fn next_deadline(&self) -> Option<Instant> {
                <$machine>::next_deadline(self)
            }
            fn is_done(&self) -> bool {
                <$machine>::is_done(self)
            }
        }
    };
}

// The coordinator's decryption runs off the loop, which keeps relaying.
impl_machine!(CoordinatorMachine, CoordinatorEvent, {
    type Work = DecryptionWork;
    type Done = DecryptionDone;
    fn poll_work(&mut self) -> Option<DecryptionWork> {
        CoordinatorMachine::poll_work(self)
    }
    fn run_work(work: DecryptionWork) -> DecryptionDone {
        work.run()
    }
    fn handle_work_done(&mut self, now: Instant, done: DecryptionDone) {
        CoordinatorMachine::handle_work_done(self, now, done)
    }
});
// A hospital's deferred encryption stays on the loop's thread: nothing waits
// on the hospital's loop meanwhile.
impl_machine!(HospitalMachine, HospitalEvent, {
    type Work = std::convert::Infallible;
    type Done = std::convert::Infallible;
    fn poll_work(&mut self) -> Option<Self::Work> {
        None
    }
    fn run_work(work: Self::Work) -> Self::Done {
        match work {}
    }
    fn handle_work_done(&mut self, _now: Instant, done: Self::Done) {
        match done {}
    }
    fn has_pending_work(&self) -> bool {
        HospitalMachine::has_pending_work(self)
    }
    fn handle_pending_work(&mut self, now: Instant) {
        HospitalMachine::handle_pending_work(self, now)
    }
});

/// Whether the loop goes on after a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep running.
    Continue,
    /// Leave the loop after this turn's transmits are queued.
    Stop,
}

/// What a binary adds to the loop. Only [`on_event`](Role::on_event) is
/// required; the other hooks default to logging.
pub trait Role<M: Machine> {
    /// The binary's error type (for example `anyhow::Error`).
    type Error: From<crate::Error>;

    /// Handles one event of the machine.
    fn on_event(&mut self, ev: M::Event, hub: &mut Hub) -> Result<Flow, Self::Error>;

    /// Called once per turn after the events are drained (to flush what the
    /// events produced as one batch).
    fn after_events(&mut self) -> Result<Flow, Self::Error> {
        Ok(Flow::Continue)
    }

    /// Lets the role change an outgoing envelope before it is encoded (the
    /// hospital's test fault injection).
    fn on_transmit(&mut self, _to: &str, _env: &mut Envelope) {}

    /// Called with every envelope once encoded, with its frame's size (the
    /// hospital's audit log).
    fn on_encoded(&mut self, _to: &str, _env: &Envelope, _bytes: usize) {}

    /// Where an encoded frame for `to` goes: by default to `to` itself; a
    /// relay-mode hospital seals a ring peer's frame and sends it to its
    /// coordinator instead, or holds it (`None`) until it can.
    fn route(&mut self, to: &str, frame: Vec<u8>) -> Option<(String, Vec<u8>)> {
        Some((to.to_owned(), frame))
    }

    /// A relay frame's payload from `peer`: what the coordinator forwards, or
    /// what a hospital opens. Returns the opened messages for the machine
    /// (sender, frame payload). By default relay frames are refused.
    fn on_relay(
        &mut self,
        peer: &str,
        _payload: &[u8],
        _limits: &PeerLimits,
        _hub: &mut Hub,
    ) -> Vec<crate::relay::Delivery> {
        tracing::warn!(%peer, "relay frame refused: this node does not relay");
        Vec::new()
    }

    /// A frame for `to` was queued on its link (the hospital's test flood).
    fn after_sent(&mut self, _to: &str, _hub: &mut Hub) {}

    /// A frame for `to` found no live link. By default it is dropped: the
    /// machines re-send what matters after a reconnection.
    fn undeliverable(&mut self, to: &str, _frame: Vec<u8>, _hub: &mut Hub) {
        tracing::debug!(peer = %to, "not connected; message dropped");
    }

    /// A link to `peer` came up (after queued frames were handed over).
    fn on_link_up(&mut self, _peer: &str, _hub: &mut Hub) {}

    /// Dialing `peer` was given up.
    fn on_dial_failed(&mut self, peer: &str, reason: &str) -> Result<(), Self::Error> {
        tracing::warn!(%peer, "cannot reach peer: {reason}");
        Ok(())
    }

    /// `peer`'s last link went down (the machine has been told already).
    fn on_peer_lost(&mut self, peer: &str, reason: &str, _machine: &M, _hub: &mut Hub) {
        tracing::warn!(%peer, "connection lost: {reason}");
    }

    /// Called with every decoded message before the machine sees it.
    fn before_message(&mut self, _env: &Envelope, _machine: &mut M) {}
}

/// As [`run`], until SIGINT or SIGTERM arrives first: then the loop stops
/// between two calls into the machine (the machines persist what must
/// survive before they transmit, so any such point is safe) and the signal
/// comes back beside `Ok(())`.
pub async fn run_until_signal<M: Machine, R: Role<M>>(
    machine: &mut M,
    role: &mut R,
    hub: &mut Hub,
    net: &mut Receiver<NetEvent>,
    max_message_bytes: usize,
    limits: &PeerLimits,
) -> (Result<(), R::Error>, Option<crate::process::Stopped>) {
    tokio::select! {
        r = run(machine, role, hub, net, max_message_bytes, limits) => (r, None),
        s = crate::process::stop_signal() => (Ok(()), Some(s)),
    }
}

/// Runs `machine` on `hub` until the role says stop, the machine is done or
/// the transport stops. `max_message_bytes` caps every encoded message;
/// received ones are decoded under their sender's `limits` (the limits the
/// transport's decoders checked, now applied to the vectors inside).
pub async fn run<M: Machine, R: Role<M>>(
    machine: &mut M,
    role: &mut R,
    hub: &mut Hub,
    net: &mut Receiver<NetEvent>,
    max_message_bytes: usize,
    limits: &PeerLimits,
) -> Result<(), R::Error> {
    // The machine's work on a blocking thread, if any: one at a time.
    let mut work: Option<tokio::task::JoinHandle<M::Done>> = None;
    loop {
        let mut flow = Flow::Continue;
        while let Some(ev) = machine.poll_event() {
            if role.on_event(ev, hub)? == Flow::Stop {
                flow = Flow::Stop;
            }
        }
        if role.after_events()? == Flow::Stop {
            flow = Flow::Stop;
        }
        while let Some((to, mut env)) = machine.poll_transmit() {
            role.on_transmit(&to, &mut env);
            tracing::trace!(peer = %to, kind = env.body.kind(), round = env.round, "sending");
            match encode_frame(&env, max_message_bytes) {
                Ok(frame) => {
                    role.on_encoded(&to, &env, frame.len());
                    let Some((to, frame)) = role.route(&to, frame) else {
                        continue;
                    };
                    if hub.send(&to, frame.clone()) {
                        role.after_sent(&to, hub);
                    } else {
                        role.undeliverable(&to, frame, hub);
                    }
                }
                Err(e) => tracing::error!(peer = %to, "cannot encode message: {e:#}"),
            }
        }
        if flow == Flow::Stop || machine.is_done() {
            return Ok(());
        }
        if work.is_none() {
            if let Some(w) = machine.poll_work() {
                // The coordinator's decryption while the members commit: off
                // this loop, which keeps forwarding their relayed commits.
                work = Some(tokio::task::spawn_blocking(move || M::run_work(w)));
            }
        }
        if machine.has_pending_work() {
            // Crypto the machine deferred until its transmits were out (a
            // member's encryption while it waits for its predecessor); then a
            // new turn.
            tokio::task::block_in_place(|| machine.handle_pending_work(Instant::now()));
            continue;
        }
        let deadline = machine.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = async { work.as_mut().expect("guarded by the condition").await },
                if work.is_some() =>
            {
                work = None;
                match done {
                    Ok(done) => machine.handle_work_done(Instant::now(), done),
                    // The work panicked: so does the loop, as it would have.
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                }
            }
            ev = net.recv() => {
                let Some(ev) = ev else {
                    return Err(crate::Error::Transport(
                        crate::transport::TransportError::EndpointClosed,
                    )
                    .into());
                };
                handle_net(machine, role, hub, ev, limits)?;
            }
            () = sleep => machine.handle_timeout(Instant::now()),
        }
    }
}

fn handle_net<M: Machine, R: Role<M>>(
    machine: &mut M,
    role: &mut R,
    hub: &mut Hub,
    ev: NetEvent,
    limits: &PeerLimits,
) -> Result<(), R::Error> {
    let now = Instant::now();
    match ev {
        NetEvent::Up {
            peer,
            id,
            out,
            handle,
        } => {
            tracing::info!(%peer, "connected");
            let first = hub.link_up(&peer, id, out, handle);
            role.on_link_up(&peer, hub);
            if first {
                machine.peer_connected(now, &peer);
            }
        }
        NetEvent::Frame { peer, payload, .. }
            if payload.first() == Some(&protocol::Kind::Relay.byte()) =>
        {
            for (from, inner) in role.on_relay(&peer, &payload[1..], limits, hub) {
                deliver(machine, role, now, &from, &inner, limits);
            }
        }
        NetEvent::Frame { peer, payload, .. } => {
            deliver(machine, role, now, &peer, &payload, limits)
        }
        NetEvent::Down {
            peer,
            id: 0,
            reason,
        } => {
            hub.dial_failed(&peer);
            role.on_dial_failed(&peer, &reason)?;
        }
        NetEvent::Down { peer, id, reason } => {
            if hub.link_down(&peer, id) {
                machine.peer_lost(now, &peer);
                role.on_peer_lost(&peer, &reason, machine, hub);
            }
        }
    }
    Ok(())
}

/// Decodes one frame payload from `peer` under its limits and hands it to the
/// machine.
fn deliver<M: Machine, R: Role<M>>(
    machine: &mut M,
    role: &mut R,
    now: Instant,
    peer: &str,
    payload: &[u8],
    limits: &PeerLimits,
) {
    match decode_payload(payload, limits.get(peer)) {
        Ok(env) => {
            tracing::trace!(%peer, kind = env.body.kind(), round = env.round, "received");
            role.before_message(&env, machine);
            // The machines do their crypto inside this call: let the
            // runtime move the link tasks to other workers meanwhile.
            let r = tokio::task::block_in_place(|| machine.handle_message(now, peer, env));
            if let Err(e) = r {
                tracing::warn!(%peer, "rejected message: {e:#}");
            }
        }
        Err(e) => tracing::warn!(%peer, "rejected message: {e:#}"),
    }
}
