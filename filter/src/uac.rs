//! The uac filter's logic over [`SipMessage`] and [`HostState`]: the rules of each hook,
//! and From/To replacement with its restore bookkeeping (Record-Route parameters,
//! transaction variables for replies, dialog variables for display names and restore_dlg).

use crate::auth;
use crate::config::{ConfigError, Options, RestoreMode};
use crate::host::{Context, HostState, Level, SipMessage, Verdict};
use crate::nameaddr::{NameAddr, param_in, route_params};
use crate::reg::store::Credentials;
use crate::replace::{self, Field, replace_value};
use crate::req_send::{self, UacReq};
use crate::restore::{self, NONCE_LEN, Sealed};
use crate::rules::action::{Action, UriTarget};
use crate::rules::pvar::{Scope, VarScope, Variables};
use crate::rules::{Hook, Rule};

/// Counter of stored originals that could not be opened or decoded.
pub const RESTORE_REFUSED: &str = "uac_restore_refused";
/// Counter of rule actions that failed (the rules go on, as in Kamailio).
pub const ACTION_FAILED: &str = "uac_action_failed";

/// The configured filter.
#[derive(Debug, Clone)]
pub struct Uac {
    opts: Options,
}

/// The hooks a configuration acts on for every message: what the filter declares to the
/// host (WIT `interest.need`) so it is not handed messages it would pass untouched.
/// Restoring From/To and renumbering CSeq after an authenticated branch need no hook of
/// their own: they follow state this filter keeps with the host (transaction and dialog
/// variables, parameters in its Record-Route), and the host delivers every message
/// carrying such state whatever was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HookNeeds {
    pub initial_requests: bool,
    pub in_dialog_requests: bool,
    pub replies: bool,
    pub failures: bool,
}

/// Per message: which headers were already replaced or restored (at most once each).
#[derive(Debug, Default)]
struct Touched {
    from: bool,
    to: bool,
}

impl Touched {
    fn get(&mut self, field: Field) -> &mut bool {
        match field {
            Field::From => &mut self.from,
            Field::To => &mut self.to,
        }
    }
}

/// One hook call's run of the rules: headers touched so far, the `$uac_req` fields as
/// set (they start empty in every hook call; in `uac:reply` with the sent request's), the
/// event being handled, and the script variables (`$var` of this call, `$avp` of the
/// transaction).
#[derive(Debug, Default)]
struct Run<'e> {
    touched: Touched,
    uac_req: UacReq,
    event: Option<&'e str>,
    event_vars: &'e [(String, String)],
    vars: Variables,
    avps: Variables,
}

impl Run<'_> {
    fn scope(&self) -> Scope<'_> {
        Scope {
            uac_req: Some(&self.uac_req),
            event: self.event_vars,
            vars: &self.vars,
            avps: &self.avps,
        }
    }

    fn set_variable<H: HostState + ?Sized>(
        &mut self,
        scope: VarScope,
        name: &str,
        value: Option<String>,
        ctx: &Context,
        host: &mut H,
    ) -> Result<(), String> {
        match scope {
            VarScope::Call => {
                self.vars.set(name, value);
                Ok(())
            }
            VarScope::Transaction => {
                if ctx.transaction_key.is_empty() {
                    return Err(format!("$avp({name}): no transaction here"));
                }
                self.avps.set(name, value);
                let json = serde_json::to_string(&self.avps).map_err(|e| e.to_string())?;
                host.transaction_set(&ctx.transaction_key, AVPS_VAR, Some(&json))
            }
        }
    }
}

/// Transaction variable holding the transaction's `$avp`s (JSON).
const AVPS_VAR: &str = "_uac_avps";

/// The message of an event that has none (a registration outcome): every field absent.
struct NoMessage;

impl SipMessage for NoMessage {
    fn is_request(&self) -> bool {
        false
    }
    fn method(&self) -> Option<String> {
        None
    }
    fn request_uri(&self) -> Option<String> {
        None
    }
    fn status(&self) -> Option<u16> {
        None
    }
    fn reason(&self) -> Option<String> {
        None
    }
    fn header(&self, _: &str) -> Option<String> {
        None
    }
    fn headers(&self, _: &str) -> Vec<String> {
        Vec::new()
    }
    fn body(&self) -> Vec<u8> {
        Vec::new()
    }
    // Event rules may not edit messages (checked at configure); nothing to change here.
    fn set_header(&mut self, _: &str, _: &str) {}
    fn set_request_uri(&mut self, _: &str) {}
    fn set_next_hop(&mut self, _: &str) {}
    fn add_header(&mut self, _: &str, _: &str) {}
    fn remove_header(&mut self, _: &str) -> u32 {
        0
    }
    fn record_route_params(&self) -> Option<String> {
        None
    }
    fn set_record_route_params(&mut self, _: Option<&str>) {}
    fn source(&self) -> String {
        String::new()
    }
    fn endpoint(&self) -> Option<String> {
        None
    }
}

/// How one action ended.
enum Flow {
    Next,
    /// A test-like action was false: the rest of this rule's `do` list is skipped.
    SkipRule,
    Stop(Verdict),
}

/// UNIX seconds now (the registration status compares binding ends with it).
fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The uac_reg_* rule functions. A false result (Kamailio's negative return) skips the
/// rest of the rule's `do` list; a store error is logged and counts as false.
/// The `uac_reg_*` functions: false (nothing found, or a store error) skips the rest of
/// the rule, as Kamailio's `if (uac_reg_...())`.
fn reg_action<M, H>(
    opts: &Options,
    action: &Action,
    ctx: &Context,
    msg: &mut M,
    reply: Option<&M>,
    host: &mut H,
    run: &mut Run<'_>,
) -> Flow
where
    M: SipMessage + ?Sized,
    H: HostState + ?Sized,
{
    use crate::reg::functions;
    let render = |t: &crate::rules::pvar::Template, msg: &M| {
        t.render_in(msg, reply, run.scope()).into_owned()
    };
    let rendered: Vec<String> = match action {
        Action::RegLookup { uuid: t, .. }
        | Action::RegLookupUri { uri: t, .. }
        | Action::RegStatus(t)
        | Action::RegSetEnabled { value: t, .. }
        | Action::RegRefresh(t) => vec![render(t, &*msg)],
        Action::RegRequestTo { user, mode } => vec![render(user, &*msg), render(mode, &*msg)],
        _ => unreachable!("only registration actions come here"),
    };
    let Some(store) = host.registrations() else {
        host.log(Level::Warn, "uac: uac_reg_* needs the host's registrations");
        return Flow::SkipRule;
    };
    let now_ms = unix_now_ms();
    // What a found record sets in the rules' variables, once the store is released.
    let mut assign: Vec<(VarScope, &str, String)> = Vec::new();
    let outcome: Result<bool, String> = match action {
        Action::RegLookupUri { dst, .. } => match functions::lookup_uri(store, &rendered[0]) {
            Some(l_uuid) => {
                assign.push((dst.0, &dst.1, l_uuid));
                Ok(true)
            }
            None => Ok(false),
        },
        Action::RegRequestTo { .. } => {
            // Configure refuses the function unless the auth_*_avp modparams name $avps.
            let avps = opts.request_to_avps.as_ref();
            match (rendered[1].trim().parse::<u32>(), avps) {
                (Ok(mode @ 0..=3), Some([user, password, realm])) => {
                    match functions::request_to(store, &rendered[0], mode) {
                        Some(to) => {
                            msg.set_request_uri(&to.request_uri);
                            if !to.dst.is_empty() {
                                msg.set_next_hop(&to.dst);
                            }
                            let (Credentials::Password(secret) | Credentials::Ha1(secret)) =
                                to.credentials;
                            assign.push((VarScope::Transaction, user, to.auth_username));
                            assign.push((VarScope::Transaction, password, secret));
                            assign.push((VarScope::Transaction, realm, to.realm));
                            Ok(true)
                        }
                        None => Ok(false),
                    }
                }
                (Ok(0..=3), None) => Err("uac_reg_request_to: auth_*_avp name no $avps".into()),
                _ => Err(format!(
                    "uac_reg_request_to: mode {:?} is not 0-3",
                    rendered[1]
                )),
            }
        }
        Action::RegLookup { dst, .. } => {
            let uuid = &rendered[0];
            match functions::lookup(store, uuid) {
                Some(uri) => {
                    match dst {
                        UriTarget::RequestUri => msg.set_request_uri(&uri),
                        UriTarget::NextHop => msg.set_next_hop(&uri),
                    }
                    Ok(true)
                }
                None => Ok(false),
            }
        }
        Action::RegStatus(_) => Ok(functions::status(store, &rendered[0], now_ms / 1000) == 1),
        Action::RegSetEnabled { attr, enabled, .. } => {
            functions::set_enabled(store, *attr, &rendered[0], *enabled, now_ms)
                .map(|n| n > 0)
                .map_err(|e| e.to_string())
        }
        Action::RegRefresh(_) => functions::refresh(store, &rendered[0]).map_err(|e| e.to_string()),
        _ => unreachable!("only registration actions come here"),
    };
    for (scope, name, value) in assign {
        if let Err(why) = run.set_variable(scope, name, Some(value), ctx, host) {
            host.log(Level::Warn, &format!("uac: {why}"));
            host.counter_add(ACTION_FAILED, 1);
            return Flow::SkipRule;
        }
    }
    match outcome {
        Ok(true) => Flow::Next,
        Ok(false) => Flow::SkipRule,
        Err(why) => {
            host.log(Level::Warn, &format!("uac: {why}"));
            host.counter_add(ACTION_FAILED, 1);
            Flow::SkipRule
        }
    }
}

/// Dialog variable names for one header: Kamailio's restore_dlg names.
struct DialogVars {
    uri: &'static str,
    uri_new: &'static str,
    display: &'static str,
    display_new: &'static str,
    ftag: &'static str,
}

fn dialog_vars(field: Field) -> DialogVars {
    match field {
        Field::From => DialogVars {
            uri: "_uac_fu",
            uri_new: "_uac_funew",
            display: "_uac_fdp",
            display_new: "_uac_fdpnew",
            ftag: "_uac_fftag",
        },
        Field::To => DialogVars {
            uri: "_uac_to",
            uri_new: "_uac_tonew",
            display: "_uac_tdp",
            display_new: "_uac_tdpnew",
            ftag: "_uac_tftag",
        },
    }
}

fn tag_of<M: SipMessage + ?Sized>(msg: &M, header: &str) -> Option<String> {
    let v = msg.header(header)?;
    NameAddr::parse(&v)?.param(&v, "tag").map(str::to_owned)
}

impl Uac {
    /// Reads and checks the JSON configuration (modparams and rules).
    pub fn configure(json: &str) -> Result<Uac, ConfigError> {
        Ok(Uac {
            opts: Options::from_json(json)?,
        })
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The hooks this configuration needs for every message: those with rules.
    pub fn hook_needs(&self) -> HookNeeds {
        let has = |hook| !self.opts.rules.for_hook(hook).is_empty();
        HookNeeds {
            initial_requests: has(Hook::Request),
            in_dialog_requests: has(Hook::Request),
            replies: has(Hook::Reply),
            failures: has(Hook::Failure),
        }
    }

    /// request_route: restore in-dialog requests (auto / restore_dlg), then the request rules.
    pub fn on_request<M, H>(&self, ctx: &Context, msg: &mut M, host: &mut H) -> Verdict
    where
        M: SipMessage + ?Sized,
        H: HostState + ?Sized,
    {
        let mut run = Run::default();
        auth::renumber_request(ctx, msg, host);
        if ctx.in_dialog && self.opts.restore_mode == RestoreMode::Auto {
            if self.opts.restore_dlg {
                for field in [Field::From, Field::To] {
                    self.restore_from_dialog(field, ctx, msg, host, &mut run.touched);
                }
            } else {
                for field in [Field::From, Field::To] {
                    self.restore_from_route(field, true, ctx, msg, host, &mut run.touched);
                }
            }
        }
        self.run_rules(Hook::Request, ctx, msg, None, host, &mut run)
    }

    /// onreply_route: put back what the request's From/To were before this filter changed
    /// them, then the reply rules.
    pub fn on_reply<M, H>(&self, ctx: &Context, msg: &mut M, host: &mut H) -> Verdict
    where
        M: SipMessage + ?Sized,
        H: HostState + ?Sized,
    {
        auth::map_reply(ctx, msg, host);
        if self.opts.restore_mode != RestoreMode::None {
            for field in [Field::From, Field::To] {
                self.restore_reply(field, ctx, msg, host);
            }
        }
        self.run_rules(Hook::Reply, ctx, msg, None, host, &mut Run::default())
    }

    /// failure_route: the failure rules over the request as sent, with the reply for
    /// `$rs`, `$rr` and `t_check_status`.
    pub fn on_failure<M, H>(
        &self,
        ctx: &Context,
        request: &mut M,
        reply: &M,
        host: &mut H,
    ) -> Verdict
    where
        M: SipMessage + ?Sized,
        H: HostState + ?Sized,
    {
        self.run_rules(
            Hook::Failure,
            ctx,
            request,
            Some(reply),
            host,
            &mut Run::default(),
        )
    }

    /// The final reply (or the host's local 408/503) to a request `uac_req_send()` sent:
    /// a 401/407 is answered with `auser`/`apasswd`, and with `evroute` set the rules of
    /// `uac:reply` run over the reply with `$uac_req(...)` as sent plus `evcode`/`evtype`.
    pub fn on_local_reply<M, H>(&self, request_id: u64, reply: &mut M, host: &mut H)
    where
        M: SipMessage + ?Sized,
        H: HostState + ?Sized,
    {
        let Some(uac_req) = req_send::on_reply(request_id, &*reply, host) else {
            return;
        };
        let mut run = Run {
            uac_req,
            event: Some(req_send::EVENT_REPLY),
            ..Run::default()
        };
        self.run_rules(
            Hook::Event,
            &Context::default(),
            reply,
            None,
            host,
            &mut run,
        );
    }

    /// Whether an `on = "event"` rule waits for event `name`: a caller may skip gathering
    /// the event's variables when none does.
    pub fn handles_event(&self, name: &str) -> bool {
        self.opts.rules.handles_event(name)
    }

    /// Raises event `name` (e.g. `uac:reg-ok`, `uac:reg-failed`): the `on = "event"` rules
    /// for it run, reading `vars` as `$event(name)`, with empty `$uac_req` fields (so a rule
    /// can set them and `uac_req_send()`). Nothing runs when no rule handles it.
    pub fn raise_event<H: HostState + ?Sized>(
        &self,
        name: &str,
        vars: &[(String, String)],
        host: &mut H,
    ) {
        if !self.handles_event(name) {
            return;
        }
        let mut run = Run {
            event: Some(name),
            event_vars: vars,
            ..Run::default()
        };
        self.run_rules(
            Hook::Event,
            &Context::default(),
            &mut NoMessage,
            None,
            host,
            &mut run,
        );
    }

    /// `uac_req_send()` for a caller outside the rules (the `uac.req_send` RPC): sends the
    /// request the fields describe and returns its id.
    pub fn req_send<H: HostState + ?Sized>(
        &self,
        req: &UacReq,
        host: &mut H,
    ) -> Result<u64, String> {
        let sent = req_send::send(req, host);
        if sent.is_err() {
            host.counter_add(req_send::REQ_FAILED, 1);
        }
        sent
    }

    fn run_rules<M, H>(
        &self,
        hook: Hook,
        ctx: &Context,
        msg: &mut M,
        reply: Option<&M>,
        host: &mut H,
        run: &mut Run<'_>,
    ) -> Verdict
    where
        M: SipMessage + ?Sized,
        H: HostState + ?Sized,
    {
        let rules: &[Rule] = self.opts.rules.for_hook(hook);
        if self.opts.rules.uses_avps && !ctx.transaction_key.is_empty() {
            run.avps = host
                .transaction_get(&ctx.transaction_key, AVPS_VAR)
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_default();
        }
        for rule in rules {
            if let (Some(want), Some(event)) = (rule.event.as_deref(), run.event)
                && !want.eq_ignore_ascii_case(event)
            {
                continue;
            }
            if rule
                .when
                .as_ref()
                .is_some_and(|w| !w.eval_in(&*msg, reply, run.scope()))
            {
                continue;
            }
            for action in &rule.actions {
                match self.run_action(action, hook, ctx, msg, reply, host, run) {
                    Flow::Next => {}
                    Flow::SkipRule => break,
                    Flow::Stop(v) => return v,
                }
            }
        }
        Verdict::Continue
    }

    #[allow(clippy::too_many_arguments)]
    fn run_action<M, H>(
        &self,
        action: &Action,
        hook: Hook,
        ctx: &Context,
        msg: &mut M,
        reply: Option<&M>,
        host: &mut H,
        run: &mut Run<'_>,
    ) -> Flow
    where
        M: SipMessage + ?Sized,
        H: HostState + ?Sized,
    {
        let result: Result<(), String> = match action {
            Action::ReplaceFrom { display, uri } | Action::ReplaceTo { display, uri } => {
                let field = if matches!(action, Action::ReplaceFrom { .. }) {
                    Field::From
                } else {
                    Field::To
                };
                let display = display
                    .as_ref()
                    .map(|d| d.render_in(&*msg, reply, run.scope()).into_owned());
                let uri = uri.render_in(&*msg, reply, run.scope()).into_owned();
                self.replace(
                    field,
                    display.as_deref(),
                    &uri,
                    ctx,
                    msg,
                    host,
                    &mut run.touched,
                )
            }
            Action::RestoreFrom => {
                self.restore_from_route(Field::From, false, ctx, msg, host, &mut run.touched);
                Ok(())
            }
            Action::RestoreTo => {
                self.restore_from_route(Field::To, false, ctx, msg, host, &mut run.touched);
                Ok(())
            }
            Action::SetUacReq { field, value } => {
                let value = value
                    .as_ref()
                    .map(|t| t.render_in(&*msg, reply, run.scope()).into_owned());
                run.uac_req
                    .set(*field, value.as_deref())
                    .map_err(|e| e.to_string())
            }
            Action::UacReqSend => self.req_send(&run.uac_req, host).map(|_| ()),
            Action::AppendHf(t) => {
                let line = t.render_in(&*msg, reply, run.scope());
                let line = line.trim_end_matches(['\r', '\n']);
                match line.split_once(':') {
                    Some((name, value)) if !value.contains(['\r', '\n']) => {
                        msg.add_header(name.trim(), value.trim());
                        Ok(())
                    }
                    _ => Err(format!("append_hf: {line:?} is not one header line")),
                }
            }
            Action::RemoveHf(name) => {
                msg.remove_header(name);
                Ok(())
            }
            Action::SlSendReply { code, reason } => {
                let reason = reason
                    .render_in(&*msg, reply, run.scope())
                    .replace(['\r', '\n'], " ");
                return Flow::Stop(Verdict::Reply {
                    code: *code,
                    reason,
                });
            }
            Action::TRelay => {
                return Flow::Stop(if hook == Hook::Failure {
                    Verdict::Resend
                } else {
                    Verdict::Continue
                });
            }
            Action::UacAuth(mode) => {
                let answered = match reply {
                    Some(reply) => {
                        auth::answer(&self.opts, mode, ctx, msg, reply, run.scope(), host)
                    }
                    None => Err("uac_auth: only in a failure rule".to_owned()),
                };
                if let Err(why) = answered {
                    // Kamailio's `if (!uac_auth()) exit;`: the failure goes back, never a
                    // resend without an answer.
                    host.log(Level::Warn, &why);
                    host.counter_add(auth::AUTH_FAILED, 1);
                    return Flow::Stop(Verdict::Continue);
                }
                Ok(())
            }
            Action::SetVariable { scope, name, value } => {
                let value = value
                    .as_ref()
                    .map(|t| t.render_in(&*msg, reply, run.scope()).into_owned());
                run.set_variable(*scope, name, value, ctx, host)
            }
            Action::RegLookup { .. }
            | Action::RegLookupUri { .. }
            | Action::RegRequestTo { .. }
            | Action::RegStatus(_)
            | Action::RegSetEnabled { .. }
            | Action::RegRefresh(_) => {
                return reg_action(&self.opts, action, ctx, msg, reply, host, run);
            }
            Action::Drop => return Flow::Stop(Verdict::Drop),
            Action::Exit => return Flow::Stop(Verdict::Continue),
        };
        if let Err(why) = result {
            host.log(Level::Warn, &format!("uac: {why}"));
            host.counter_add(ACTION_FAILED, 1);
        }
        Flow::Next
    }

    /// `uac_replace_from` for Rust filters: replaces From of `msg` (a request in its
    /// request hook) with the restore bookkeeping of the configured mode.
    pub fn replace_from<M, H>(
        &self,
        ctx: &Context,
        msg: &mut M,
        host: &mut H,
        display: Option<&str>,
        uri: &str,
    ) -> Result<(), String>
    where
        M: SipMessage + ?Sized,
        H: HostState + ?Sized,
    {
        let mut touched = Touched::default();
        self.replace(Field::From, display, uri, ctx, msg, host, &mut touched)
    }

    /// `uac_replace_to` for Rust filters; see [`Uac::replace_from`].
    pub fn replace_to<M, H>(
        &self,
        ctx: &Context,
        msg: &mut M,
        host: &mut H,
        display: Option<&str>,
        uri: &str,
    ) -> Result<(), String>
    where
        M: SipMessage + ?Sized,
        H: HostState + ?Sized,
    {
        let mut touched = Touched::default();
        self.replace(Field::To, display, uri, ctx, msg, host, &mut touched)
    }

    /// `uac_replace_from/to` with the restore bookkeeping of the configured mode.
    #[allow(clippy::too_many_arguments)]
    fn replace<M, H>(
        &self,
        field: Field,
        display: Option<&str>,
        uri: &str,
        ctx: &Context,
        msg: &mut M,
        host: &mut H,
        touched: &mut Touched,
    ) -> Result<(), String>
    where
        M: SipMessage + ?Sized,
        H: HostState + ?Sized,
    {
        let name = field.header();
        if *touched.get(field) {
            return Err(format!(
                "{name} already replaced or restored in this message"
            ));
        }
        if self.opts.restore_mode == RestoreMode::Auto && tag_of(msg, "To").is_some() {
            return Err(format!(
                "restore_mode auto: {name} of an in-dialog request is not replaced"
            ));
        }
        let done = replace::replace(msg, field, display, uri).map_err(|e| e.to_string())?;
        *touched.get(field) = true;
        if self.opts.restore_mode == RestoreMode::None {
            return Ok(());
        }
        let var = self.reply_var(field);
        host.transaction_set(&ctx.transaction_key, var, Some(&done.old_value))
            .map_err(|e| format!("transaction variable {var}: {e}"))?;
        let displays = display.map(|_| (done.old_display.clone(), done.new_display.clone()));
        let ftag = tag_of(msg, "From");
        let vars = dialog_vars(field);
        if self.opts.restore_dlg {
            let dialog = ctx
                .dialog_key
                .as_deref()
                .ok_or("restore_dlg: the request has no dialog key")?;
            let mut set = |n: &str, v: &str| {
                host.dialog_set(dialog, n, Some(v))
                    .map_err(|e| format!("dialog variable {n}: {e}"))
            };
            set(vars.uri, &done.old_uri)?;
            set(vars.uri_new, &done.new_uri)?;
            set(vars.ftag, ftag.as_deref().unwrap_or(""))?;
            if let Some((old, new)) = &displays {
                set(vars.display, old.as_deref().unwrap_or(""))?;
                set(vars.display_new, new.as_deref().unwrap_or(""))?;
            }
            return Ok(());
        }
        let param = self.param_name(field);
        let value = match &self.opts.secure_keys {
            Some(keys) => {
                let mut nonce = [0u8; NONCE_LEN];
                host.random_bytes(&mut nonce);
                let sealed = Sealed {
                    old_uri: done.old_uri.clone(),
                    new_uri: done.new_uri.clone(),
                    displays: displays.clone(),
                };
                keys.seal(&sealed, param, ftag.as_deref().unwrap_or(""), nonce)
            }
            None => {
                // Kamailio's form carries only the URI; the displays go to dialog variables
                // so in-dialog requests get them back too.
                if let (Some((old, new)), Some(dialog)) = (&displays, &ctx.dialog_key) {
                    for (n, v) in [(vars.display, old), (vars.display_new, new)] {
                        host.dialog_set(dialog, n, Some(v.as_deref().unwrap_or("")))
                            .map_err(|e| format!("dialog variable {n}: {e}"))?;
                    }
                }
                restore::encode_kamailio(&done.old_uri, &done.new_uri, &self.opts.restore_passwd)
            }
        };
        let mut params = msg.record_route_params().unwrap_or_default();
        if let Some(ftag) = &ftag
            && param_in(&params, "ftag").is_none()
        {
            params.push_str(";ftag=");
            params.push_str(ftag);
        }
        params.push(';');
        params.push_str(param);
        params.push('=');
        params.push_str(&value);
        msg.set_record_route_params(Some(&params));
        Ok(())
    }

    fn param_name(&self, field: Field) -> &str {
        match field {
            Field::From => &self.opts.rr_from_store_param,
            Field::To => &self.opts.rr_to_store_param,
        }
    }

    fn reply_var(&self, field: Field) -> &str {
        match field {
            Field::From => &self.opts.restore_from_var,
            Field::To => &self.opts.restore_to_var,
        }
    }

    /// An in-dialog request carrying the stored original of `field` (vsf for From, vst for
    /// To) in its Route: rewrite the header the direction selects. `auto`: also remember the
    /// header as received so the replies get it back.
    fn restore_from_route<M, H>(
        &self,
        field: Field,
        auto: bool,
        ctx: &Context,
        msg: &mut M,
        host: &mut H,
        touched: &mut Touched,
    ) where
        M: SipMessage + ?Sized,
        H: HostState + ?Sized,
    {
        let Some(route) = ctx.own_route.as_deref() else {
            return;
        };
        let params = route_params(route);
        let param = self.param_name(field);
        let Some(stored) = param_in(params, param) else {
            return;
        };
        let ftag = param_in(params, "ftag");
        // Without ftag the direction cannot be told; Kamailio then takes downstream.
        let downstream = ftag.is_none_or(|f| tag_of(msg, "From").as_deref() == Some(f));
        let target = if downstream { field } else { field.other() };
        if *touched.get(target) {
            return;
        }
        let Some(current) = msg.header(target.header()) else {
            return;
        };
        let Some(na) = NameAddr::parse(&current) else {
            self.refuse(host, param, target, "header is not a valid name-addr");
            return;
        };
        let current_uri = na.uri(&current);
        let restored = match &self.opts.secure_keys {
            Some(keys) => keys
                .open(stored, param, ftag.unwrap_or(""))
                .and_then(|s| s.other_side(current_uri)),
            None => restore::decode_kamailio(stored, current_uri, &self.opts.restore_passwd).map(
                |uri| restore::Restored {
                    uri,
                    display: self.display_from_dialog(field, downstream, ctx, host),
                },
            ),
        };
        let restored = match restored {
            Ok(r) => r,
            Err(e) => {
                self.refuse(host, param, target, &e.to_string());
                return;
            }
        };
        let display = restored
            .display
            .as_ref()
            .map(|d| d.as_deref().unwrap_or(""));
        match replace_value(&current, display, &restored.uri, target) {
            Ok(value) => {
                if auto && msg.method().as_deref() != Some("ACK") {
                    let _ = host.transaction_set(
                        &ctx.transaction_key,
                        self.reply_var(target),
                        Some(&current),
                    );
                }
                msg.set_header(target.header(), &value);
                *touched.get(target) = true;
            }
            Err(e) => self.refuse(host, param, target, &e.to_string()),
        }
    }

    /// The display to write in Kamailio-compatible mode: the replaced one going downstream,
    /// the original going upstream; `None` (leave it) when no display was replaced.
    fn display_from_dialog<H: HostState + ?Sized>(
        &self,
        field: Field,
        downstream: bool,
        ctx: &Context,
        host: &H,
    ) -> Option<Option<String>> {
        let dialog = ctx.dialog_key.as_deref()?;
        let vars = dialog_vars(field);
        let name = if downstream {
            vars.display_new
        } else {
            vars.display
        };
        let d = host.dialog_get(dialog, name)?;
        Some((!d.is_empty()).then_some(d))
    }

    /// restore_dlg: rewrite an in-dialog request from the dialog variables.
    fn restore_from_dialog<M, H>(
        &self,
        field: Field,
        ctx: &Context,
        msg: &mut M,
        host: &mut H,
        touched: &mut Touched,
    ) where
        M: SipMessage + ?Sized,
        H: HostState + ?Sized,
    {
        let Some(dialog) = ctx.dialog_key.as_deref() else {
            return;
        };
        let vars = dialog_vars(field);
        let (Some(orig), Some(new)) = (
            host.dialog_get(dialog, vars.uri),
            host.dialog_get(dialog, vars.uri_new),
        ) else {
            return;
        };
        let ftag = host.dialog_get(dialog, vars.ftag).unwrap_or_default();
        let downstream = tag_of(msg, "From").unwrap_or_default() == ftag;
        let target = if downstream { field } else { field.other() };
        if *touched.get(target) {
            return;
        }
        let (uri, display_var) = if downstream {
            (new, vars.display_new)
        } else {
            (orig, vars.display)
        };
        let display = host.dialog_get(dialog, display_var);
        let Some(current) = msg.header(target.header()) else {
            return;
        };
        match replace_value(&current, display.as_deref(), &uri, target) {
            Ok(value) => {
                if msg.method().as_deref() != Some("ACK") {
                    let _ = host.transaction_set(
                        &ctx.transaction_key,
                        self.reply_var(target),
                        Some(&current),
                    );
                }
                msg.set_header(target.header(), &value);
                *touched.get(target) = true;
            }
            Err(e) => self.refuse(host, vars.uri, target, &e.to_string()),
        }
    }

    /// A reply to a request whose `field` this filter changed: the value it had before.
    fn restore_reply<M, H>(&self, field: Field, ctx: &Context, msg: &mut M, host: &mut H)
    where
        M: SipMessage + ?Sized,
        H: HostState + ?Sized,
    {
        let Some(original) = host.transaction_get(&ctx.transaction_key, self.reply_var(field))
        else {
            return;
        };
        let Some(orig) = NameAddr::parse(&original) else {
            return;
        };
        let Some(current) = msg.header(field.header()) else {
            return;
        };
        let display = orig.display(&original).unwrap_or("");
        match replace_value(&current, Some(display), orig.uri(&original), field) {
            Ok(value) => msg.set_header(field.header(), &value),
            Err(e) => self.refuse(host, self.reply_var(field), field, &e.to_string()),
        }
    }

    fn refuse<H: HostState + ?Sized>(&self, host: &mut H, param: &str, target: Field, why: &str) {
        host.log(
            Level::Warn,
            &format!("uac: {} not restored from {param}: {why}", target.header()),
        );
        host.counter_add(RESTORE_REFUSED, 1);
    }
}
