//! The dealer validates hospital names with its own copy of the consortium's
//! certificate-name rule (it must run offline, without the `node` crate's
//! network stack); this holds that copy to `node::pki::validate_node_name`,
//! the rule's owner.

use proptest::prelude::*;

fn same_verdict(name: &str) {
    let dealer = key_ceremony::validate_hospital_name(name).is_ok();
    let node = node::pki::validate_node_name(name).is_ok();
    assert_eq!(dealer, node, "{name:?}: dealer {dealer}, node {node}");
}

#[test]
fn known_names_get_the_same_verdict() {
    let long = "a".repeat(63);
    let too_long = "a".repeat(64);
    for name in [
        "hospital-1",
        "a",
        "0",
        &long,
        &too_long,
        "",
        "-a",
        "a-",
        "Hospital",
        "a_b",
        "a.b",
        "a b",
        "é",
        "a--b",
    ] {
        same_verdict(name);
    }
}

proptest! {
    #[test]
    fn any_name_gets_the_same_verdict(name in "[a-zA-Z0-9._ -]{0,70}") {
        same_verdict(&name);
    }
}
