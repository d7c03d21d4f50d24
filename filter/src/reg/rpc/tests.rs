use super::*;
use crate::reg::flags;
use crate::reg::functions::{MATCH_L_USERNAME, USE_HA1, lookup, lookup_uri, request_to, status};
use crate::reg::machine::Reply;
use crate::reg::params::RegParams;
use crate::reg::store::MemoryStore;

const NOW_MS: u64 = 1_000_000_000;
const NOW: u64 = NOW_MS / 1000;
const HA1: &str = "0123456789abcdef0123456789abcdef";

fn row(l_uuid: &str, l_username: &str) -> Account {
    Account {
        l_uuid: l_uuid.into(),
        l_username: l_username.into(),
        l_domain: "local.test".into(),
        r_username: format!("r-{l_uuid}"),
        r_domain: "provider.test".into(),
        auth_username: format!("a-{l_uuid}"),
        auth_proxy: "sip:127.0.0.1:5090".into(),
        expires: 600,
        ..Account::default()
    }
}

fn setup() -> (MemoryStore, Registrar) {
    let store = MemoryStore::with_rows(vec![
        (
            row("u1", "alice"),
            Credentials::Password("pw-secret-1".into()),
        ),
        (row("u2", "bob"), Credentials::Ha1(HA1.into())),
    ]);
    let registrar = Registrar::new(RegParams {
        contact_addr: "127.0.0.1:5060".into(),
        retry_interval: 30,
        ..RegParams::default()
    });
    (store, registrar)
}

fn fresh() -> Fresh {
    Fresh {
        call_id: "cid".into(),
        from_tag: "ftag".into(),
        cnonce: "cn".into(),
    }
}

fn rpc(
    store: &mut MemoryStore,
    reg: &mut Registrar,
    method: &str,
    params: &str,
) -> Result<RpcAnswer, RpcError> {
    call(store, reg, method, params, NOW_MS, fresh())
}

fn set_flags(store: &mut MemoryStore, l_uuid: &str, add: u32, until: u64) {
    let (a, mut s) = store.get(l_uuid).unwrap();
    s.flags |= add;
    s.registered_until = until;
    store.update_state(a.id, &s).unwrap();
}

#[test]
fn lookup_and_lookup_uri() {
    let (store, _) = setup();
    assert_eq!(
        lookup(&store, "u1").as_deref(),
        Some("sip:alice@local.test")
    );
    assert_eq!(lookup(&store, "nope"), None);
    assert_eq!(
        lookup_uri(&store, "sip:bob@anything.test;transport=udp").as_deref(),
        Some("u2")
    );
    assert_eq!(lookup_uri(&store, "sip:carol@local.test"), None);
    assert_eq!(lookup_uri(&store, "not a uri"), None);
}

#[test]
fn status_values_are_kamailios() {
    let (mut store, _) = setup();
    assert_eq!(status(&store, "nope", NOW), -1);
    assert_eq!(status(&store, "u1", NOW), -99);
    set_flags(&mut store, "u1", flags::ONGOING, 0);
    assert_eq!(status(&store, "u1", NOW), -2);
    // A refresh under way while the old binding is valid still reads registered.
    set_flags(&mut store, "u1", flags::ONLINE, NOW + 10);
    assert_eq!(status(&store, "u1", NOW), 1);
    assert_eq!(status(&store, "u1", NOW + 10), -2, "binding over");
    set_flags(&mut store, "u1", flags::DISABLED, NOW + 10);
    assert_eq!(status(&store, "u1", NOW), -3);
}

#[test]
fn request_to_mode_bits() {
    let (store, _) = setup();
    let to = request_to(&store, "u1", 0).unwrap();
    assert_eq!(to.request_uri, "sip:r-u1@provider.test");
    assert_eq!(to.dst, "sip:127.0.0.1:5090");
    assert_eq!(to.auth_username, "a-u1");
    assert_eq!(to.credentials, Credentials::Password("pw-secret-1".into()));
    assert!(
        request_to(&store, "alice", 0).is_none(),
        "mode 0 matches l_uuid"
    );
    assert_eq!(
        request_to(&store, "alice", MATCH_L_USERNAME)
            .unwrap()
            .auth_username,
        "a-u1"
    );
    let bob = request_to(&store, "bob", MATCH_L_USERNAME | USE_HA1).unwrap();
    assert_eq!(bob.credentials, Credentials::Ha1(HA1.into()));
    assert!(request_to(&store, "u2", 0).is_none(), "no password for u2");
    assert!(!format!("{to:?}").contains("pw-secret-1"));
}

#[test]
fn enable_disable_by_attribute() {
    let (mut store, mut reg) = setup();
    let a = rpc(
        &mut store,
        &mut reg,
        "uac.reg_disable",
        r#"["l_username","alice"]"#,
    )
    .unwrap();
    assert_eq!(a.result["count"], 1);
    assert_eq!(status(&store, "u1", NOW), -3);
    let id = store.get("u1").unwrap().0.id;
    assert_eq!(store.next_due(id), None);
    assert!(
        reg.on_due(&mut store, id, DueReason::Retry, NOW, fresh())
            .unwrap()
            .is_none()
    );
    rpc(
        &mut store,
        &mut reg,
        "uac.reg_enable",
        r#"["auth_username","a-u1"]"#,
    )
    .unwrap();
    assert_eq!(status(&store, "u1", NOW), -99);
    assert_eq!(store.next_due(id), Some(NOW_MS + 1000));
    assert!(matches!(
        rpc(&mut store, &mut reg, "uac.reg_enable", r#"["l_uuid","zz"]"#),
        Err(RpcError::NotFound { .. })
    ));
    assert!(matches!(
        rpc(&mut store, &mut reg, "uac.reg_enable", r#"["realm","x"]"#),
        Err(RpcError::BadParams { .. })
    ));
}

#[test]
fn dump_and_info_use_kamailio_fields_and_never_show_secrets() {
    let (mut store, mut reg) = setup();
    let dump = rpc(&mut store, &mut reg, "uac.reg_dump", "")
        .unwrap()
        .result;
    let text = dump.to_string();
    assert_eq!(dump.as_array().unwrap().len(), 2);
    assert!(
        !text.contains("pw-secret-1") && !text.contains(HA1),
        "{text}"
    );
    assert!(!text.contains("auth_password") && !text.contains("auth_ha1"));
    let info = rpc(&mut store, &mut reg, "uac.reg_info", r#"["l_uuid","u2"]"#)
        .unwrap()
        .result;
    for field in [
        "l_uuid",
        "l_username",
        "l_domain",
        "r_username",
        "r_domain",
        "realm",
        "auth_username",
        "auth_proxy",
        "expires",
        "flags",
        "diff_expires",
        "timer_expires",
        "reg_delay",
        "contact_addr",
        "socket",
    ] {
        assert!(info.get(field).is_some(), "{field} missing");
    }
    assert_eq!(info["l_username"], "bob");
    assert_eq!(info["status"], -99);
}

#[test]
fn add_remove_and_conflicts() {
    let (mut store, mut reg) = setup();
    let p = r#"["u3","carol","local.test","rc","provider.test",".","ac","pw3",".","sip:127.0.0.1:5090",300,0,0,".","10.0.0.1:5060"]"#;
    rpc(&mut store, &mut reg, "uac.reg_add", p).unwrap();
    let (a, _) = store.get("u3").unwrap();
    assert_eq!(
        (a.expires, a.realm.as_str(), a.contact_addr.as_str()),
        (300, "", "10.0.0.1:5060")
    );
    assert_eq!(
        store.credentials(a.id),
        Some(Credentials::Password("pw3".into()))
    );
    assert!(matches!(
        rpc(&mut store, &mut reg, "uac.reg_add", p),
        Err(RpcError::UuidExists)
    ));
    let no_secret = p.replace("\"pw3\"", "\".\"");
    let err = rpc(&mut store, &mut reg, "uac.reg_add", &no_secret).unwrap_err();
    assert!(
        err.to_string().contains("auth_password or auth_ha1"),
        "{err}"
    );
    let empty_proxy = p
        .replace("\"u3\"", "\"u4\"")
        .replace("\"sip:127.0.0.1:5090\"", "\".\"");
    assert!(
        rpc(&mut store, &mut reg, "uac.reg_add", &empty_proxy)
            .unwrap_err()
            .to_string()
            .contains("auth_proxy")
    );
    rpc(&mut store, &mut reg, "uac.reg_remove", r#"["u3"]"#).unwrap();
    assert!(store.get("u3").is_none());
    assert!(matches!(
        rpc(&mut store, &mut reg, "uac.reg_remove", r#"["u3"]"#),
        Err(RpcError::NotFound { .. })
    ));
}

#[test]
fn reload_and_refresh_keep_unchanged_rows_state() {
    let (mut store, mut reg) = setup();
    set_flags(&mut store, "u1", flags::ONLINE, NOW + 600);
    set_flags(&mut store, "u2", flags::ONLINE, NOW + 600);
    store.table_mut()[1].0.expires = 1200;
    let r = rpc(&mut store, &mut reg, "uac.reg_reload", "")
        .unwrap()
        .result;
    assert_eq!(
        r,
        serde_json::json!({"added":0,"changed":1,"removed":0,"unchanged":1})
    );
    assert_eq!(
        status(&store, "u1", NOW),
        1,
        "unchanged row keeps its binding"
    );
    assert_eq!(status(&store, "u2", NOW), -99, "edited row starts over");
    rpc(&mut store, &mut reg, "uac.reg_refresh", r#"["u1"]"#).unwrap();
    assert_eq!(status(&store, "u1", NOW), 1);
    assert!(rpc(&mut store, &mut reg, "uac.reg_refresh", r#"["zz"]"#).is_err());
}

#[test]
fn active_register_unregister() {
    let (mut store, mut reg) = setup();
    let a = rpc(&mut store, &mut reg, "uac.reg_active", "[0]")
        .unwrap()
        .result;
    assert_eq!(a, serde_json::json!({"omode":1,"nmode":0}));
    assert!(!store.is_active() && !reg.params.active);
    let id = store.get("u1").unwrap().0.id;
    assert!(
        reg.on_due(&mut store, id, DueReason::Initial, NOW, fresh())
            .unwrap()
            .is_none()
    );
    rpc(&mut store, &mut reg, "uac.reg_active", r#"["1"]"#).unwrap();
    assert!(rpc(&mut store, &mut reg, "uac.reg_active", "[2]").is_err());

    let a = rpc(&mut store, &mut reg, "uac.reg_register", r#"["u1"]"#).unwrap();
    let out = a.send.expect("a REGISTER");
    assert_eq!(out.request.header("Expires"), Some("600"));
    reg.sent(7, out);
    let ok = Reply {
        status: 200,
        reason: "OK".into(),
        headers: vec![(
            "Contact".into(),
            "<sip:u1@127.0.0.1:5060>;expires=600".into(),
        )],
    };
    reg.on_reply(&mut store, 7, &ok, NOW, fresh()).unwrap();
    assert_eq!(status(&store, "u1", NOW), 1);
    let a = rpc(&mut store, &mut reg, "uac.reg_unregister", r#"["u1"]"#).unwrap();
    assert_eq!(a.send.unwrap().request.header("Expires"), Some("0"));
}

#[test]
fn unknown_method_and_bad_params() {
    let (mut store, mut reg) = setup();
    assert!(matches!(
        rpc(&mut store, &mut reg, "uac.reg_nope", ""),
        Err(RpcError::UnknownMethod(_))
    ));
    let err = rpc(&mut store, &mut reg, "uac.reg_info", r#"["l_uuid"]"#).unwrap_err();
    assert!(err.to_string().contains("uac.reg_info: takes 2"), "{err}");
    assert!(rpc(&mut store, &mut reg, "uac.reg_info", "{bad json").is_err());
    assert!(is_reg_method("uac.reg_dump") && !is_reg_method("uac.dump"));
}
