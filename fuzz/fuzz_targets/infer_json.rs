//! Arbitrary bodies POSTed to the Open Inference Protocol infer route of a served model
//! (the real axum router, no socket): the answer is a success or a 4xx with the protocol's
//! error JSON, never a panic or a 5xx.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use quarry_serving::{BatchConfig, Limits, ServedModel, router};
use tower::ServiceExt;

fn app() -> &'static (tokio::runtime::Runtime, Router) {
    static APP: OnceLock<(tokio::runtime::Runtime, Router)> = OnceLock::new();
    APP.get_or_init(|| {
        let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/bundles/gbdt.json");
        let dir = std::env::temp_dir().join(format!("quarry-fuzz-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::copy(&bundle, dir.join("pipeline.json")).expect("tests/data/bundles/gbdt.json");
        let pipeline = quarry_serving::model::load_pipeline(&dir).expect("a valid bundle");
        let model =
            ServedModel::new(pipeline, "m", "1", None, BatchConfig::default()).expect("scorer starts");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        (runtime, router(model, Limits::default()))
    })
}

fuzz_target!(|data: &[u8]| {
    let (runtime, router) = app();
    let request = Request::post("/v2/models/m/infer")
        .header("content-type", "application/json")
        .body(Body::from(data.to_vec()))
        .expect("a static request");
    let response = runtime.block_on(router.clone().oneshot(request)).expect("infallible");
    let status = response.status();
    assert!(
        status.is_success() || status.is_client_error(),
        "{status} for {:?}",
        String::from_utf8_lossy(data)
    );
    if status == StatusCode::OK || status.is_client_error() {
        let body = runtime.block_on(axum::body::to_bytes(response.into_body(), 1 << 24)).expect("body");
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok(), "non-JSON answer");
    }
});
