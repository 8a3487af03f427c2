//! Unit tests of the rate limiter's arithmetic and fallback.
use super::gcra::MIN_SWEEP_LEN;
use super::*;

const MS: Duration = Duration::from_millis(1);

#[test]
fn decision_reports_reset_and_retry() {
    let gcra = Gcra::new(Quota::default());
    assert_eq!(
        (gcra.interval_us, gcra.tolerance_us, gcra.limit),
        (10_000, 2_000_000, 201)
    );
    let d = gcra.decision(false, 2_004_000);
    assert_eq!(d.retry_after, Some(4 * MS));
    assert_eq!(d.reset_after, Duration::from_micros(2_004_000));
    let d = gcra.decision(true, 10_000);
    assert_eq!((d.remaining, d.retry_after), (200, None));
}

#[test]
fn odd_quotas_stay_sane() {
    let gcra = Gcra::new(Quota {
        rate_per_sec: 0.0,
        burst: 0,
    });
    assert_eq!((gcra.limit, gcra.tolerance_us), (1, 0));
    let gcra = Gcra::new(Quota {
        rate_per_sec: -1.0,
        burst: u32::MAX,
    });
    assert_eq!(gcra.tolerance_us, 1 << 52);
    let gcra = Gcra::new(Quota {
        rate_per_sec: 3.0,
        burst: 2,
    });
    assert_eq!(gcra.interval_us, 333_333);
}

#[test]
fn idle_keys_are_swept() {
    let limiter = LocalLimiter::default();
    let quota = Quota::default();
    for i in 0..MIN_SWEEP_LEN - 1 {
        limiter.check_at(&i.to_string(), quota, Duration::ZERO);
    }
    assert_eq!(limiter.len(), MIN_SWEEP_LEN - 1);
    limiter.check_at("late", quota, Duration::from_secs(60));
    assert_eq!(limiter.len(), 1);
}

#[test]
fn headers_round_up_and_retry_is_at_least_one_second() {
    let refused = Decision {
        allowed: false,
        limit: 201,
        remaining: 0,
        reset_after: Duration::from_millis(2001),
        retry_after: Some(Duration::from_millis(10)),
    };
    let text: Vec<(String, String)> = refused
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let expected = [
        ("ratelimit-limit", "201"),
        ("ratelimit-remaining", "0"),
        ("ratelimit-reset", "3"),
        ("retry-after", "1"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(text, expected);
    let allowed = Decision {
        allowed: true,
        retry_after: None,
        ..refused
    };
    assert_eq!(allowed.headers().len(), 3);
}

#[test]
fn the_stricter_of_two_decisions_refuses_if_either_refuses() {
    let gcra = Gcra::new(Quota::default());
    let roomy = gcra.decision(true, 10_000);
    let tight = gcra.decision(true, 1_990_000);
    let refused_soon = gcra.decision(false, 2_004_000);
    let refused_late = gcra.decision(false, 2_050_000);
    assert_eq!(roomy.stricter(tight), tight);
    assert_eq!(tight.stricter(roomy), tight);
    assert_eq!(roomy.stricter(refused_soon), refused_soon);
    assert_eq!(refused_soon.stricter(roomy), refused_soon);
    assert_eq!(refused_soon.stricter(refused_late), refused_late);
    assert_eq!(refused_late.stricter(refused_soon), refused_late);
}

#[test]
fn a_learnt_shared_tat_continues_the_budget_and_never_moves_back() {
    let limiter = LocalLimiter::default();
    let quota = Quota::default();
    let t0 = Duration::from_secs(5);
    // Redis said 150 requests of the shared budget (201) are spent, 10 of them by this limiter.
    for _ in 0..10 {
        limiter.check_at("k", quota, t0);
    }
    limiter.raise_tat_at("k", t0 + 150 * 10 * MS);
    // An older, smaller answer arriving late changes nothing.
    limiter.raise_tat_at("k", t0 + 20 * 10 * MS);
    let passed = (0..100)
        .filter(|_| limiter.check_at("k", quota, t0).allowed)
        .count();
    assert_eq!(passed, 51);
    // A key this limiter never counted learns the shared state too.
    limiter.raise_tat_at("new", t0 + 199 * 10 * MS);
    let d = limiter.check_at("new", quota, t0);
    assert!(d.allowed && d.remaining == 1, "{d:?}");
}
