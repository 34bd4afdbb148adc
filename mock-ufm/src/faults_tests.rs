//! Tests of the fault rules: matching, probabilities, budgets and expiry.

use super::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

fn decide(set: &mut FaultSet, method: &str, path: &str, now: Instant) -> Decision {
    set.decide(method, path, &format!("/ufmRest{path}"), now, &mut rng())
}

#[test]
fn rules_parse_from_flat_json_and_round_trip() {
    let json = r#"{"kind":"error","statuses":[502,503],"probability":0.5,
                   "method":"POST","path_prefix":"/resources/pkeys","count":3}"#;
    let rule: FaultRule = serde_json::from_str(json).unwrap();
    assert_eq!(rule.kind, FaultKind::Error { statuses: vec![502, 503] });
    assert_eq!(rule.scope.method.as_deref(), Some("POST"));
    assert_eq!(rule.count, Some(3));
    let back: FaultRule = serde_json::from_value(serde_json::to_value(&rule).unwrap()).unwrap();
    assert_eq!(back, rule);

    let lat: FaultRule = serde_json::from_str(r#"{"kind":"latency","min_ms":10,"max_ms":20}"#).unwrap();
    assert_eq!(lat, FaultRule::latency_between(Duration::from_millis(10), Duration::from_millis(20)));
}

#[test]
fn malformed_rules_are_refused_with_a_reason() {
    for (json, needle) in [
        (r#"{"kind":"explode"}"#, "unknown fault kind"),
        (r#"{"kind":"reset","statuses":[500]}"#, "statuses"),
        (r#"{"kind":"error","ms":5}"#, "ms"),
        (r#"{"kind":"error","statuses":[200]}"#, "4xx/5xx"),
        (r#"{"kind":"outage"}"#, "duration_ms"),
        (r#"{"kind":"latency"}"#, "latency needs"),
        (r#"{"kind":"latency","min_ms":9,"max_ms":1}"#, "latency needs"),
        (r#"{"kind":"reset","probability":2}"#, "probability"),
        (r#"{"kind":"reset","colour":"red"}"#, "colour"),
    ] {
        let err = serde_json::from_str::<FaultRule>(json).unwrap_err();
        assert!(err.to_string().contains(needle), "{json}: {err}");
    }
}

#[test]
fn scope_limits_rules_to_method_and_path_prefix() {
    let now = Instant::now();
    let mut set = FaultSet::default();
    set.add(FaultRule::error_rate(1.0, &[502]).method("post").path("/resources/pkeys"), now);
    assert_eq!(decide(&mut set, "GET", "/resources/pkeys", now).action, None);
    assert_eq!(decide(&mut set, "POST", "/app/tokens", now).action, None);
    assert_eq!(decide(&mut set, "POST", "/resources/pkeys/add", now).action, Some(Action::Status(502)));
}

#[test]
fn full_path_prefix_scopes_to_one_api_flavour() {
    let now = Instant::now();
    let mut set = FaultSet::default();
    set.add(FaultRule::reset().path("/ufmRestV3/"), now);
    let mut r = rng();
    let d = set.decide("GET", "/app/ufm_version", "/ufmRest/app/ufm_version", now, &mut r);
    assert_eq!(d.action, None);
    let d = set.decide("GET", "/app/ufm_version", "/ufmRestV3/app/ufm_version", now, &mut r);
    assert_eq!(d.action, Some(Action::Reset));
}

#[test]
fn counted_rules_fire_exactly_n_times_then_vanish() {
    let now = Instant::now();
    let mut set = FaultSet::default();
    set.add(FaultRule::unauthorized_next(2), now);
    assert_eq!(decide(&mut set, "GET", "/x", now).action, Some(Action::Unauthorized));
    assert_eq!(set.list(now)[0].remaining, Some(1));
    assert_eq!(decide(&mut set, "GET", "/x", now).action, Some(Action::Unauthorized));
    assert_eq!(decide(&mut set, "GET", "/x", now).action, None);
    assert!(set.list(now).is_empty());
}

#[test]
fn windowed_rules_expire() {
    let now = Instant::now();
    let mut set = FaultSet::default();
    set.add(FaultRule::outage(Duration::from_secs(5)), now);
    assert_eq!(decide(&mut set, "GET", "/x", now).action, Some(Action::Outage));
    let later = now + Duration::from_secs(5);
    assert_eq!(decide(&mut set, "GET", "/x", later).action, None);
    assert!(set.list(later).is_empty());
}

#[test]
fn latencies_add_up_and_the_first_terminal_rule_wins() {
    let now = Instant::now();
    let mut set = FaultSet::default();
    set.add(FaultRule::latency(Duration::from_millis(10)), now);
    set.add(FaultRule::hang(), now);
    set.add(FaultRule::latency(Duration::from_millis(5)), now);
    set.add(FaultRule::reset(), now);
    let d = decide(&mut set, "GET", "/x", now);
    assert_eq!(d.latency, Duration::from_millis(15));
    assert_eq!(d.action, Some(Action::Hang(None)));
}

#[test]
fn random_latency_stays_in_range() {
    let now = Instant::now();
    let (lo, hi) = (Duration::from_millis(10), Duration::from_millis(20));
    let mut set = FaultSet::default();
    set.add(FaultRule::latency_between(lo, hi), now);
    let mut r = rng();
    let seen: Vec<Duration> = (0..200).map(|_| set.decide("GET", "/x", "/ufmRest/x", now, &mut r).latency).collect();
    assert!(seen.iter().all(|d| *d >= lo && *d <= hi));
    assert!(seen.iter().any(|d| *d != seen[0]), "latency never varied");
}

#[test]
fn error_rate_fails_only_a_fraction_with_listed_statuses() {
    let now = Instant::now();
    let mut set = FaultSet::default();
    set.add(FaultRule::error_rate(0.3, &[500, 503]), now);
    let mut r = rng();
    let actions: Vec<Option<Action>> =
        (0..1000).map(|_| set.decide("GET", "/x", "/ufmRest/x", now, &mut r).action).collect();
    let failed = actions.iter().filter(|a| a.is_some()).count();
    assert!((200..400).contains(&failed), "failed {failed} of 1000");
    assert!(actions.iter().flatten().all(|a| matches!(a, Action::Status(500 | 503))));
    assert!(actions.contains(&Some(Action::Status(500))));
    assert!(actions.contains(&Some(Action::Status(503))));
}
