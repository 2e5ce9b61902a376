//! Artifacts to and from the coordinator's blob store.

use std::sync::Arc;
use std::time::Instant;

use quarry_featurize::Predictions;
use quarry_learners::FittedModel;
use quarry_proto::pb;
use serde::{Deserialize, Serialize};

use super::connection::{Backoff, Client, rpc};
use super::{CHUNK, RESULT_RETRY_FOR, Shared};
use crate::{TrialArtifacts, WorkerError};

pub async fn get_blob(mut client: Client, hash: &str) -> Result<Vec<u8>, WorkerError> {
    let mut stream = client
        .get_blob(pb::BlobRef { hash: hash.to_string(), size: 0 })
        .await
        .map_err(|s| rpc("GetBlob", s))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(|s| rpc("GetBlob", s))? {
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

/// Streams bytes to the coordinator's blob store; returns the artifact record naming them.
pub async fn put_blob(
    mut client: Client,
    name: &str,
    bytes: Vec<u8>,
) -> Result<pb::ArtifactInfo, WorkerError> {
    let size = bytes.len() as u64;
    let bytes = Arc::new(bytes);
    let n = bytes.len().div_ceil(CHUNK).max(1);
    let first_name = name.to_string();
    let chunks = tokio_stream::iter((0..n).map(move |i| pb::Chunk {
        data: bytes[i * CHUNK..((i + 1) * CHUNK).min(bytes.len())].to_vec(),
        name: if i == 0 { first_name.clone() } else { String::new() },
    }));
    let r = client.put_blob(chunks).await.map_err(|s| rpc("PutBlob", s))?.into_inner();
    Ok(pb::ArtifactInfo { name: name.to_string(), hash: r.hash, size })
}

/// Uploads blobs, retrying while the coordinator is unreachable.
pub(super) async fn put_blob_retry(
    shared: &Shared,
    name: &str,
    bytes: Vec<u8>,
) -> Result<pb::ArtifactInfo, WorkerError> {
    let start = Instant::now();
    let mut backoff = Backoff::new();
    loop {
        match put_blob(shared.client.clone(), name, bytes.clone()).await {
            Ok(a) => return Ok(a),
            Err(WorkerError::Rpc { code, .. })
                if (code == "Unavailable" || code == "Unknown") && start.elapsed() < RESULT_RETRY_FOR =>
            {
                backoff.wait().await
            }
            Err(e) => return Err(e),
        }
    }
}

/// Out-of-fold predictions as they travel between workers (JSON keeps f64 bit-exact).
#[derive(Serialize, Deserialize)]
struct OofBlob {
    n_classes: Option<usize>,
    values: Vec<f64>,
}

pub(super) fn encode_artifacts(
    artifacts: &TrialArtifacts,
) -> Result<Vec<(&'static str, Vec<u8>)>, WorkerError> {
    let mut out = Vec::new();
    if let Some(oof) = &artifacts.oof {
        let blob = match oof {
            Predictions::Probabilities { n_classes, values } => {
                OofBlob { n_classes: Some(*n_classes), values: values.clone() }
            }
            Predictions::Values(values) => OofBlob { n_classes: None, values: values.clone() },
        };
        out.push(("oof", serde_json::to_vec(&blob)?));
    }
    out.push(("fold_models", serde_json::to_vec(&artifacts.fold_models)?));
    Ok(out)
}

pub(super) fn decode_artifacts(oof: Option<&[u8]>, models: &[u8]) -> Result<TrialArtifacts, WorkerError> {
    let oof = match oof {
        Some(bytes) => {
            let b: OofBlob = serde_json::from_slice(bytes)?;
            Some(match b.n_classes {
                Some(n_classes) => Predictions::Probabilities { n_classes, values: b.values },
                None => Predictions::Values(b.values),
            })
        }
        None => None,
    };
    let fold_models: Vec<FittedModel> = serde_json::from_slice(models)?;
    Ok(TrialArtifacts { fold_models, oof })
}
