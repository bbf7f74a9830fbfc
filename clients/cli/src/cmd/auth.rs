//! `user`, `role`, `token`: runtime auth management through the Auth
//! service (needs the admin role). Changes print the auth revision and
//! whether every voter acknowledged them.

use d_engine_client::{AuthChange, AuthRole, AuthUser};
use serde_json::json;

use crate::args::{Format, Global, PasswordArg, RoleCmd, TokenCmd, UserCmd};
use crate::connect::connect;
use crate::exit::{self, CliError, CliResult};
use crate::output::{print_json, text, Table};

/// `--new-password`, or one line of stdin (without its line end).
fn password(p: PasswordArg) -> CliResult<String> {
    if let Some(pw) = p.new_password {
        return Ok(pw);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CliError::new(exit::ERROR, format!("reading the password from stdin: {e}")))?;
    let pw = line.trim_end_matches(['\n', '\r']).to_string();
    if pw.is_empty() {
        return Err(CliError::usage("no password given")
            .with_hint("pass --new-password PW, or write it as one line to stdin"));
    }
    Ok(pw)
}

fn print_change(format: Format, what: &str, c: AuthChange) {
    match format {
        Format::Json => print_json(&json!({
            "revision": c.revision,
            "every_voter_acknowledged": c.every_voter_acknowledged,
        })),
        _ => {
            println!("{what} (auth revision {})", c.revision);
            if !c.every_voter_acknowledged {
                eprintln!(
                    "warning: not every voter acknowledged the change in time; a lagging voter \
                     applies it when it catches up"
                );
            }
        }
    }
}

fn print_users(format: Format, users: &[AuthUser]) {
    match format {
        Format::Json => print_json(&json!(users
            .iter()
            .map(|u| json!({
                "name": u.name,
                "roles": u.roles,
                "source": u.source,
                "has_password": u.has_password,
                "tokens": u.tokens,
            }))
            .collect::<Vec<_>>())),
        Format::Simple => {
            for u in users {
                println!("{} {} {}", u.name, u.source, u.roles.join(","));
            }
        }
        Format::Table => {
            let mut t = Table::new(&["NAME", "SOURCE", "ROLES", "PASSWORD", "TOKENS"]);
            for u in users {
                t.row(vec![
                    u.name.clone(),
                    u.source.clone(),
                    u.roles.join(","),
                    if u.has_password { "yes" } else { "no" }.into(),
                    u.tokens.to_string(),
                ]);
            }
            t.print();
        }
    }
}

fn print_roles(format: Format, roles: &[AuthRole]) {
    match format {
        Format::Json => print_json(&json!(roles
            .iter()
            .map(|r| json!({
                "name": r.name,
                "source": r.source,
                "permissions": r.permissions.iter().map(|p| json!({
                    "prefix": text(&p.prefix),
                    "access": p.access,
                })).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>())),
        Format::Simple => {
            for r in roles {
                for p in &r.permissions {
                    println!("{} {} {} {}", r.name, r.source, text(&p.prefix), p.access);
                }
                if r.permissions.is_empty() {
                    println!("{} {}", r.name, r.source);
                }
            }
        }
        Format::Table => {
            let mut t = Table::new(&["ROLE", "SOURCE", "PREFIX", "ACCESS"]);
            for r in roles {
                if r.permissions.is_empty() {
                    t.row(vec![
                        r.name.clone(),
                        r.source.clone(),
                        String::new(),
                        String::new(),
                    ]);
                }
                for p in &r.permissions {
                    t.row(vec![
                        r.name.clone(),
                        r.source.clone(),
                        format!("{:?}", text(&p.prefix)),
                        p.access.clone(),
                    ]);
                }
            }
            t.print();
        }
    }
}

pub async fn user(g: &Global, c: UserCmd) -> CliResult {
    let client = connect(g).await?;
    let auth = client.auth();
    match c {
        UserCmd::Add {
            name,
            password: p,
            no_password,
        } => {
            let pw = if no_password {
                String::new()
            } else {
                password(p)?
            };
            let ch = auth.user_add(&name, &pw).await?;
            print_change(g.output, &format!("user {name} added"), ch);
        }
        UserCmd::Delete { name } => {
            let ch = auth.user_delete(&name).await?;
            print_change(g.output, &format!("user {name} deleted"), ch);
        }
        UserCmd::Passwd { name, password: p } => {
            let pw = password(p)?;
            let ch = auth.user_change_password(&name, &pw).await?;
            print_change(g.output, &format!("password of {name} changed"), ch);
        }
        UserCmd::GrantRole { name, role } => {
            let ch = auth.user_grant_role(&name, &role).await?;
            print_change(g.output, &format!("role {role} granted to {name}"), ch);
        }
        UserCmd::RevokeRole { name, role } => {
            let ch = auth.user_revoke_role(&name, &role).await?;
            print_change(g.output, &format!("role {role} revoked from {name}"), ch);
        }
        UserCmd::List => print_users(g.output, &auth.user_list().await?),
        UserCmd::Get { name } => print_users(g.output, &[auth.user_get(&name).await?]),
    }
    Ok(exit::OK)
}

pub async fn role(g: &Global, c: RoleCmd) -> CliResult {
    let client = connect(g).await?;
    let auth = client.auth();
    match c {
        RoleCmd::Add { name } => {
            let ch = auth.role_add(&name).await?;
            print_change(g.output, &format!("role {name} added"), ch);
        }
        RoleCmd::Delete { name } => {
            let ch = auth.role_delete(&name).await?;
            print_change(g.output, &format!("role {name} deleted"), ch);
        }
        RoleCmd::Grant {
            role,
            prefix,
            access,
        } => {
            let ch = auth
                .role_grant_permission(&role, prefix.as_bytes(), &access)
                .await?;
            print_change(
                g.output,
                &format!("role {role}: {access} on prefix {prefix:?}"),
                ch,
            );
        }
        RoleCmd::Revoke { role, prefix } => {
            let ch = auth
                .role_revoke_permission(&role, prefix.as_bytes())
                .await?;
            print_change(
                g.output,
                &format!("role {role}: grant on prefix {prefix:?} revoked"),
                ch,
            );
        }
        RoleCmd::List => print_roles(g.output, &auth.role_list().await?),
        RoleCmd::Get { name } => print_roles(g.output, &[auth.role_get(&name).await?]),
    }
    Ok(exit::OK)
}

pub async fn token(g: &Global, c: TokenCmd) -> CliResult {
    let client = connect(g).await?;
    let auth = client.auth();
    match c {
        TokenCmd::Create { owner, ttl } => {
            let t = auth
                .token_create(&owner, ttl.map_or(0, |d| d.as_secs().max(1)))
                .await?;
            match g.output {
                Format::Json => print_json(&json!({
                    "token": t.token,
                    "expires_at_ms": t.expires_at_ms,
                })),
                _ => println!("{}", t.token),
            }
        }
        TokenCmd::Revoke { revoked } => {
            let ch = auth.token_revoke(&revoked).await?;
            print_change(g.output, "token revoked", ch);
        }
    }
    Ok(exit::OK)
}
