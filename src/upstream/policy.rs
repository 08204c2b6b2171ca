//! What an upstream server added through the admin API may be (config
//! `admin_servers`): which environment variable may hold its key, and which
//! addresses it may resolve to. YAML backends are the operator's own and are
//! not checked.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::config::{AdminServersConfig, BackendUrl};

/// Why a server is refused, and which request field is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub param: &'static str,
    pub message: String,
}

fn refused(param: &'static str, message: String) -> Result<(), Refused> {
    Err(Refused { param, message })
}

/// Only variables the operator set aside for upstream keys may be named: any
/// other (`PGPASSWORD`, `CREEM_API_KEY`, the admin token...) would be sent
/// to the server as its bearer token.
pub fn check_key_env(policy: &AdminServersConfig, var: &str) -> Result<(), Refused> {
    let prefixed = !policy.key_env_prefix.is_empty() && var.starts_with(&policy.key_env_prefix);
    if prefixed || policy.key_envs.iter().any(|v| v == var) {
        return Ok(());
    }
    refused(
        "api_key_env",
        format!(
            "`{var}` is not an upstream key variable: name one starting with `{}`{} (config `admin_servers`)",
            policy.key_env_prefix,
            if policy.key_envs.is_empty() { "" } else { " or listed in `admin_servers.key_envs`" }
        ),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Link-local, cloud metadata, unspecified, multicast, broadcast: never.
    Forbidden,
    Loopback,
    Private,
    Public,
}

fn reach(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                // Alibaba Cloud's metadata service.
                || v4 == std::net::Ipv4Addr::new(100, 100, 100, 200)
            {
                Reach::Forbidden
            } else if v4.is_loopback() {
                Reach::Loopback
            } else if v4.is_private() || (o[0] == 100 && (64..128).contains(&o[1])) {
                Reach::Private
            } else {
                Reach::Public
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return reach(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            // AWS's IPv6 metadata endpoint.
            let metadata = v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
            if metadata || v6.is_unspecified() || v6.is_multicast() || first & 0xffc0 == 0xfe80 {
                Reach::Forbidden
            } else if v6.is_loopback() {
                Reach::Loopback
            } else if first & 0xfe00 == 0xfc00 {
                Reach::Private
            } else {
                Reach::Public
            }
        }
    }
}

/// Every address the server's name resolves to must be allowed (a name with
/// one public and one metadata address is refused), and a key must not travel
/// in clear to a host that is not this machine unless the config allows it.
pub fn check_addresses(
    policy: &AdminServersConfig,
    url: &BackendUrl,
    addrs: &[SocketAddr],
    has_key: bool,
) -> Result<(), Refused> {
    if addrs.is_empty() {
        return refused("url", format!("`{}` resolves to no address", url.host));
    }
    let mut all_loopback = true;
    for addr in addrs {
        let ip = addr.ip();
        match reach(ip) {
            Reach::Forbidden => {
                return refused(
                    "url",
                    format!("`{}` resolves to {ip}, a link-local or metadata address, which upstream servers may never use", url.host),
                )
            }
            Reach::Loopback | Reach::Private if !policy.allow_private => {
                return refused(
                    "url",
                    format!("`{}` resolves to {ip}, a loopback or private address; set `admin_servers.allow_private: true` to allow it", url.host),
                )
            }
            Reach::Loopback => {}
            Reach::Private | Reach::Public => all_loopback = false,
        }
    }
    if has_key && !url.tls && !all_loopback && !policy.allow_plain_http {
        return refused(
            "url",
            format!("the key would travel in clear to `{}`: use https://, or set `admin_servers.allow_plain_http: true`", url.host),
        );
    }
    Ok(())
}

/// Both checks for one server: its key variable, then its addresses.
pub fn check_server(
    policy: &AdminServersConfig,
    url: &BackendUrl,
    key_env: Option<&str>,
    addrs: &[SocketAddr],
) -> Result<(), Refused> {
    if let Some(var) = key_env {
        check_key_env(policy, var)?;
    }
    check_addresses(policy, url, addrs, key_env.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &AdminServersConfig, url: &str, ip: &str, key: bool) -> Result<(), Refused> {
        let url = BackendUrl::parse(url).unwrap();
        let addr = SocketAddr::new(ip.parse().unwrap(), url.port);
        check_addresses(policy, &url, &[addr], key)
    }

    #[test]
    fn metadata_and_link_local_are_refused_even_when_private_is_allowed() {
        let open = AdminServersConfig {
            allow_private: true,
            allow_plain_http: true,
            ..Default::default()
        };
        for ip in [
            "169.254.169.254",
            "fd00:ec2::254",
            "fe80::1",
            "0.0.0.0",
            "::ffff:169.254.169.254",
            "100.100.100.200",
        ] {
            let e = check(&open, "http://metadata.example", ip, false).unwrap_err();
            assert_eq!(e.param, "url", "{ip}");
            assert!(e.message.contains("metadata"), "{ip}: {}", e.message);
        }
    }

    #[test]
    fn private_needs_the_config_and_keys_need_tls_off_this_machine() {
        let strict = AdminServersConfig::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "100.64.0.1",
            "fd12::1",
            "::1",
        ] {
            assert!(
                check(&strict, "https://internal.example", ip, false).is_err(),
                "{ip}"
            );
        }
        assert!(check(&strict, "https://api.example.com", "93.184.215.14", true).is_ok());
        assert!(check(&strict, "http://api.example.com", "93.184.215.14", true).is_err());
        assert!(check(&strict, "http://api.example.com", "93.184.215.14", false).is_ok());
        let private = AdminServersConfig {
            allow_private: true,
            ..Default::default()
        };
        assert!(check(&private, "http://127.0.0.1:4000", "127.0.0.1", true).is_ok());
        assert!(check(&private, "http://10.0.0.5:4000", "10.0.0.5", true).is_err());
    }

    #[test]
    fn only_upstream_key_variables_may_be_named() {
        let policy = AdminServersConfig {
            key_envs: vec!["OPENAI_API_KEY".into()],
            ..Default::default()
        };
        assert!(check_key_env(&policy, "BLUESMINDS_UPSTREAM_GROQ").is_ok());
        assert!(check_key_env(&policy, "OPENAI_API_KEY").is_ok());
        for var in ["PGPASSWORD", "CREEM_API_KEY", "BLUESMINDS_ADMIN_TOKEN"] {
            assert_eq!(
                check_key_env(&policy, var).unwrap_err().param,
                "api_key_env"
            );
        }
    }
}
