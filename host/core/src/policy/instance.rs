//! A live policy instance and its contract calls, on either contract version: a 0.1.0
//! component's `prepare` is called the old way and its prompt comes back as `step::ready`.

use std::time::Instant;

use wasmtime::Store;
use wasmtime::component::Instance;

use super::call::{CallFailure, CallState, InstanceSlot, failure};
use super::contract::{
    Answer, Exports, PolicyError, PolicyInfo, Prepared, Reply, Settings, Step, TurnInput, Version,
};
use crate::store::Record;

/// A live policy instance for one request; dropped afterwards (a trap poisons only this one).
pub struct PolicyInstance {
    store: Store<CallState>,
    instance: Instance,
    exports: Exports,
    ticks: u64,
    _slot: InstanceSlot,
}

/// `history#render`'s result as the guest returns it.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
struct Message {
    role: String,
    content: String,
}

impl PolicyInstance {
    pub(super) fn new(
        store: Store<CallState>,
        instance: Instance,
        exports: Exports,
        ticks: u64,
        slot: InstanceSlot,
    ) -> Self {
        Self {
            store,
            instance,
            exports,
            ticks,
            _slot: slot,
        }
    }

    /// Starts a call's time: the epoch deadline for wasm, the instant for host calls.
    fn reset_deadline(&mut self) {
        self.store.set_epoch_deadline(self.ticks);
        let state = self.store.data_mut();
        state.deadline = Instant::now() + state.call_timeout;
        state.host_timed_out = None;
    }

    /// The policy's `info`, under the same deadline and limits as every call.
    pub fn info(&mut self) -> Result<PolicyInfo, CallFailure> {
        self.reset_deadline();
        let result = self
            .instance
            .get_typed_func::<(), (PolicyInfo,)>(&mut self.store, &self.exports.info)
            .and_then(|info| info.call(&mut self.store, ()))
            .map(|(info,)| info);
        result.map_err(|e| failure(&self.store, e))
    }

    /// The policy's `prepare`: the prompt for this turn, or (0.2.0) a completion it needs
    /// first; `answers` are those it asked for so far this turn.
    ///
    /// The records are lowered into the guest straight from the store's shared [`Record`]s,
    /// with no copy of the session each turn.
    pub fn prepare(
        &mut self,
        records: &[Record],
        input: &TurnInput,
        settings: &Settings,
        answers: &[Answer],
    ) -> Result<Step, CallFailure> {
        self.reset_deadline();
        let index = self.exports.prepare;
        let result = match self.exports.version {
            Version::V0_2 => self
                .instance
                .get_typed_func::<(&[Record], &TurnInput, &Settings, &[Answer]), (Result<Step, PolicyError>,)>(
                    &mut self.store,
                    index,
                )
                .and_then(|f| f.call(&mut self.store, (records, input, settings, answers)))
                .map(|(result,)| result),
            Version::V0_1 => self
                .instance
                .get_typed_func::<(&[Record], &TurnInput, &Settings), (Result<Prepared, PolicyError>,)>(
                    &mut self.store,
                    index,
                )
                .and_then(|f| f.call(&mut self.store, (records, input, settings)))
                .map(|(result,)| result.map(Step::Ready)),
        };
        self.outcome(result)
    }

    /// The policy's `commit`: the record to append for this turn (none for a policy that keeps nothing).
    pub fn commit(
        &mut self,
        input: &TurnInput,
        settings: &Settings,
        carry: &[u8],
        reply: &Reply,
    ) -> Result<Option<Vec<u8>>, CallFailure> {
        self.reset_deadline();
        let result = self
            .instance
            .get_typed_func::<(&TurnInput, &Settings, &[u8], &Reply), (Result<Option<Vec<u8>>, PolicyError>,)>(
                &mut self.store,
                self.exports.commit,
            )
            .and_then(|f| f.call(&mut self.store, (input, settings, carry, reply)))
            .map(|(result,)| result);
        self.outcome(result)
    }

    /// A contract call's result: a trap described with the policy's stderr, or the policy's
    /// own answer, a declined call included.
    fn outcome<T>(
        &mut self,
        result: wasmtime::Result<Result<T, PolicyError>>,
    ) -> Result<T, CallFailure> {
        // The model's server, not the policy, ran out the clock.
        if let Some(timeout) = self.store.data_mut().host_timed_out.take() {
            return Err(CallFailure::Declined(PolicyError::HostFailed(timeout)));
        }
        result
            .map_err(|e| failure(&self.store, e))?
            .map_err(CallFailure::Declined)
    }

    /// Type-checks every contract function the component exports against the version it
    /// claims, so a component whose functions do not match is refused when it is loaded,
    /// not on its first turn.
    pub(super) fn check_exports(&mut self) -> Result<(), CallFailure> {
        let e = self.exports.clone();
        let store = &mut self.store;
        let instance = &self.instance;
        let checked = instance
            .get_typed_func::<(), (PolicyInfo,)>(&mut *store, e.info)
            .map(drop)
            .and_then(|()| match e.version {
                Version::V0_2 => instance
                    .get_typed_func::<(&[Record], &TurnInput, &Settings, &[Answer]), (Result<Step, PolicyError>,)>(
                        &mut *store,
                        e.prepare,
                    )
                    .map(drop),
                Version::V0_1 => instance
                    .get_typed_func::<(&[Record], &TurnInput, &Settings), (Result<Prepared, PolicyError>,)>(
                        &mut *store,
                        e.prepare,
                    )
                    .map(drop),
            })
            .and_then(|()| {
                instance
                    .get_typed_func::<(&TurnInput, &Settings, &[u8], &Reply), (Result<Option<Vec<u8>>, PolicyError>,)>(
                        &mut *store,
                        e.commit,
                    )
                    .map(drop)
            })
            .and_then(|()| match e.render {
                None => Ok(()),
                Some(render) => instance
                    .get_typed_func::<(&[Record], &Settings), (Result<Vec<Message>, PolicyError>,)>(
                        &mut *store,
                        render,
                    )
                    .map(drop),
            });
        checked.map_err(|e| failure(&self.store, e))
    }

    /// The stored session as chat messages (role, content), oldest first, from the optional
    /// `history` export; `Ok(None)` when the component has none.
    pub fn render(
        &mut self,
        records: &[Record],
        settings: &Settings,
    ) -> Result<Option<Vec<(String, String)>>, CallFailure> {
        let Some(render) = self.exports.render else {
            return Ok(None);
        };
        self.reset_deadline();
        let result = self
            .instance
            .get_typed_func::<(&[Record], &Settings), (Result<Vec<Message>, PolicyError>,)>(
                &mut self.store,
                render,
            )
            .and_then(|f| f.call(&mut self.store, (records, settings)))
            .map(|(result,)| result);
        let messages = self.outcome(result)?;
        Ok(Some(
            messages.into_iter().map(|m| (m.role, m.content)).collect(),
        ))
    }
}
