//! The worker's configuration never shows its token.

use quarry_worker::client::WorkerConfig;

#[test]
fn worker_config_debug_hides_the_token() {
    let mut c = WorkerConfig::new("https://coordinator:7070");
    c.token = Some("s3cret-token".into());
    let text = format!("{c:?}");
    assert!(!text.contains("s3cret-token") && text.contains("redacted"), "{text}");
    assert!(text.contains("https://coordinator:7070"));
}
