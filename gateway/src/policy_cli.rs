//! `egress-gateway policy check|compile|eval|import|export`: the policy
//! engine without the network, for editing policies, CI pipelines, and
//! moving rules from and to AWS Network Firewall Proxy.

use std::io::Write;

use std::sync::Arc;

use egress_policy::{HttpResponse, Phase, SourceIdentity, compile_documents};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::args::{EvalArgs, PolicyCommand, Vendor};
use crate::pipeline::{Described, FixedAddress, Guard, evaluate};
use crate::request::{Client, Listener};
use crate::sources::file::load_policy_file;

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
                for credential in policy.proxy().credentials() {
                    writeln!(
                        out,
                        "credential {:?}: header {} from Secret {} key {}",
                        credential.name, credential.header, credential.secret, credential.key
                    )?;
                }
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
        PolicyCommand::Eval(args) => eval(*args, out, err),
        PolicyCommand::Import {
            from: Vendor::Aws,
            files,
        } => {
            let mut inputs = Vec::new();
            for file in &files {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
                inputs.push((file.display().to_string(), text));
            }
            let imported = match egress_policy::aws::import(&inputs) {
                Ok(imported) => imported,
                Err(error) => {
                    writeln!(err, "error: {error}")?;
                    return Ok(1);
                }
            };
            write!(out, "{}", imported.yaml)?;
            for note in &imported.notes {
                let mark = if note.changes_decisions {
                    "changes decisions"
                } else {
                    "note"
                };
                writeln!(err, "{mark}: {}: {}", note.at, note.message)?;
            }
            Ok(i32::from(imported.changes_decisions()))
        }
        PolicyCommand::Export {
            to: Vendor::Aws,
            file,
        } => {
            let text = std::fs::read_to_string(&file)?;
            match egress_policy::parse_documents(&text) {
                Ok(documents) => match egress_policy::aws::export(&documents) {
                    Ok(json) => {
                        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
                        Ok(0)
                    }
                    Err(errors) => report(err, &file, &errors),
                },
                Err(errors) => {
                    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    report(err, &file, &errors)
                }
            }
        }
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

/// Evaluates a request the way the gateway would and prints its log line:
/// the same pipeline, with `--dest-ip` standing in for DNS.
fn eval(args: EvalArgs, out: &mut impl Write, err: &mut impl Write) -> anyhow::Result<i32> {
    let policy = match load_policy_file(&args.file, args.proxy.as_deref()) {
        Ok(policy) => Arc::new(policy),
        Err(errors) => return report(err, &args.file, &errors),
    };
    let request_headers = headers(&args.headers)?;
    let response_headers = headers(&args.response_headers)?;
    let identity = match &args.source_namespace {
        None => None,
        Some(namespace) => Some(Arc::new(SourceIdentity {
            namespace: namespace.clone(),
            pod: args.source_pod.clone().unwrap_or_default(),
            service_account: args
                .source_service_account
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            labels: args
                .source_labels
                .iter()
                .map(|label| {
                    label
                        .split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .ok_or_else(|| anyhow::anyhow!("--source-label {label:?} is not key=value"))
                })
                .collect::<anyhow::Result<_>>()?,
        })),
    };
    let described = Described {
        client: Client {
            addr: args.source,
            listener: Listener::Http,
            identity,
        },
        url: &args.url,
        method: &args.method,
        headers: &request_headers,
        response: args.status.map(|status| HttpResponse {
            status,
            headers: &response_headers,
        }),
        arrived: args.time.unwrap_or_else(jiff::Timestamp::now),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let finished = runtime.block_on(evaluate(
        policy,
        Arc::from(args.cluster_name.as_str()),
        &described,
        &FixedAddress(args.dest_ip),
        &Guard::default(),
    ));
    match finished {
        Ok(finished) => {
            writeln!(out, "{}", finished.record.to_line())?;
            Ok(0)
        }
        Err(error) => {
            writeln!(err, "{:?} cannot be evaluated: {error}", args.url)?;
            Ok(1)
        }
    }
}
