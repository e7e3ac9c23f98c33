//! `egress-gateway policy check|compile|eval`: the policy engine without the
//! network, for editing policies and for CI pipelines.

use std::io::Write;

use egress_policy::{
    Decision, Domain, HttpRequest, HttpResponse, PRIVATE_DESTINATION_RULE, Phase, RequestContext,
    Verdict, compile_documents,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::args::{EvalArgs, PolicyCommand};
use crate::decision_log::Record;
use crate::file_source::load_policy_file;

/// Runs a `policy` subcommand; returns the process exit code.
pub fn run(
    command: PolicyCommand,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<i32> {
    match command {
        PolicyCommand::Check { file, proxy } => match load_policy_file(&file, proxy.as_deref()) {
            Ok(policy) => {
                let counts: Vec<String> = Phase::ALL
                    .iter()
                    .map(|p| format!("{} {}", policy.rule_count(*p), p.as_str()))
                    .collect();
                writeln!(
                    out,
                    "ok: {} (configuration {:?}, proxy {:?}, {} rule groups; rules: {}; defaults: {}/{}/{})",
                    file.display(),
                    policy.configuration(),
                    policy.proxy().name(),
                    policy.document().rule_groups.len(),
                    counts.join(", "),
                    policy.default_action(Phase::PreDns).as_str(),
                    policy.default_action(Phase::PreRequest).as_str(),
                    policy.default_action(Phase::PostResponse).as_str(),
                )?;
                writeln!(out, "hash: {}", policy.hash())?;
                Ok(0)
            }
            Err(errors) => report(err, &file, &errors),
        },
        PolicyCommand::Compile { file, proxy } => {
            let text = std::fs::read_to_string(&file)?;
            match compile_documents(&text, proxy.as_deref()) {
                Ok(policy) => {
                    writeln!(out, "{}", policy.to_json_pretty())?;
                    Ok(0)
                }
                Err(errors) => {
                    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    report(err, &file, &errors)
                }
            }
        }
        PolicyCommand::Eval(args) => eval(args, out, err),
    }
}

fn report(err: &mut impl Write, file: &std::path::Path, errors: &[String]) -> anyhow::Result<i32> {
    writeln!(
        err,
        "{} is invalid ({} error{}):",
        file.display(),
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    )?;
    for error in errors {
        writeln!(err, "  {error}")?;
    }
    Ok(1)
}

fn headers(lines: &[String]) -> anyhow::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("header {line:?} is not `Name: value`"))?;
        map.append(
            HeaderName::from_bytes(name.trim().as_bytes())?,
            HeaderValue::from_str(value.trim())?,
        );
    }
    Ok(map)
}

/// Evaluates a request the way the gateway would and prints its log line.
fn eval(args: EvalArgs, out: &mut impl Write, err: &mut impl Write) -> anyhow::Result<i32> {
    let policy = match load_policy_file(&args.file, args.proxy.as_deref()) {
        Ok(policy) => policy,
        Err(errors) => return report(err, &args.file, &errors),
    };
    let url: http::Uri = args
        .url
        .parse()
        .map_err(|e| anyhow::anyhow!("{:?} is not a URL: {e}", args.url))?;
    let tunnel = match url.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => anyhow::bail!(
            "{:?}: only http:// and https:// URLs can be evaluated",
            args.url
        ),
    };
    let host = url
        .host()
        .ok_or_else(|| anyhow::anyhow!("{:?} has no host", args.url))?;
    let port = url.port_u16().unwrap_or(if tunnel { 443 } else { 80 });
    let domain = Domain::new(host.trim_start_matches('[').trim_end_matches(']'));
    let intercepted = tunnel && policy.proxy().intercepts(&domain);
    let http_visible = !tunnel || intercepted;
    let request_headers = headers(&args.headers)?;
    let response_headers = headers(&args.response_headers)?;
    let target = url
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .to_owned();

    let vpce = format!("{}-http", policy.proxy().name());
    let method = if http_visible {
        args.method.as_str()
    } else {
        "CONNECT"
    };
    let mut record = Record::new(policy.proxy().name(), "", &vpce, args.source, method);
    record.dest_domain = domain.to_string();
    record.dest_port = port;
    record.url = if http_visible {
        args.url.clone()
    } else {
        format!("{domain}:{port}")
    };

    let mut ctx = RequestContext {
        time: Some(args.time.unwrap_or_else(jiff::Timestamp::now)),
        source_ip: Some(args.source.ip()),
        source_port: Some(args.source.port()),
        source_vpce: Some(&vpce),
        protocol: Some(if tunnel { "https" } else { "http" }),
        destination_domain: Some(domain.clone()),
        destination_port: Some(port),
        ..Default::default()
    };
    let mut decision = Decision::default();
    let status = 'decide: {
        if policy.evaluate_phase(Phase::PreDns, &ctx, &mut decision) == Verdict::Deny {
            break 'decide 403;
        }
        record.dest_ip = Some(args.dest_ip);
        if policy.proxy().refuses_destination(args.dest_ip) {
            decision.deny_by(Phase::PreRequest, PRIVATE_DESTINATION_RULE);
            break 'decide 403;
        }
        ctx.destination_ip = Some(args.dest_ip);
        let request = http_visible.then_some(HttpRequest {
            method: &args.method,
            uri: &target,
            headers: &request_headers,
        });
        ctx.request = request;
        if policy.evaluate_phase(Phase::PreRequest, &ctx, &mut decision) == Verdict::Deny {
            break 'decide 403;
        }
        let Some(status) = args.status.filter(|_| http_visible) else {
            break 'decide -1;
        };
        ctx.response = Some(HttpResponse {
            status,
            headers: &response_headers,
        });
        if policy.evaluate_phase(Phase::PostResponse, &ctx, &mut decision) == Verdict::Deny {
            break 'decide 403;
        }
        i32::from(status)
    };
    record.set_decision(&decision);
    record.http_status_code = status;
    writeln!(out, "{}", record.to_line())?;
    Ok(0)
}
