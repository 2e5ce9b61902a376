//! Arbitrary bytes as each wire message the coordinator or a worker decodes, then the pb →
//! domain conversions both sides run on them. The first byte picks the message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use quarry_proto::{convert, pb};

fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 14 {
        0 => {
            if let Some(spec) = decode::<pb::JobSpec>(bytes) {
                let _ = quarry_worker::client::prepare_options(&spec);
            }
        }
        1 => {
            if let Some(t) = decode::<pb::TrialSpec>(bytes) {
                let _ = quarry_search::TrialSpec::try_from(t);
            }
        }
        2 => {
            if let Some(o) = decode::<pb::TrialOutcome>(bytes) {
                let _ = quarry_search::TrialOutcome::try_from(o);
            }
        }
        3 => {
            if let Some(pb::CompleteRequest {
                result: Some(pb::complete_request::Result::Trial(o)), ..
            }) = decode::<pb::CompleteRequest>(bytes)
            {
                let _ = quarry_search::TrialOutcome::try_from(o);
            }
        }
        4 => {
            drop(decode::<pb::Task>(bytes));
        }
        5 => drop(decode::<pb::LeaseRequest>(bytes)),
        6 => drop(decode::<pb::LeaseResponse>(bytes)),
        7 => drop(decode::<pb::ProgressRequest>(bytes)),
        8 => drop(decode::<pb::FailRequest>(bytes)),
        9 => drop(decode::<pb::WorkerInfo>(bytes)),
        10 => drop(decode::<pb::Chunk>(bytes)),
        11 => drop(decode::<pb::Leaderboard>(bytes)),
        12 => drop(decode::<pb::JobEvent>(bytes)),
        _ => {
            if let Ok(status) = i32::decode(bytes) {
                let _ = convert::status_from_pb(status);
            }
        }
    }
});
