//! The authorizer's settings (`authorizer`, `super_users`,
//! `allow_everyone_if_no_acl_found`), checked and turned into the form
//! the ACL decision reads.

use super::{Config, ConfigError};
use crate::acl::Settings;

impl Config {
    /// The authorizer's settings, or the key that is wrong.
    pub fn acl_settings(&self) -> Result<Settings, ConfigError> {
        let enabled = match self.authorizer.trim() {
            "on" => true,
            "off" => false,
            other => {
                return Err(ConfigError {
                    key: "authorizer",
                    value: other.into(),
                    allowed: "on or off".into(),
                })
            }
        };
        let super_users =
            Settings::parse_super_users(&self.super_users).map_err(|e| ConfigError {
                key: "super_users",
                value: self.super_users.clone(),
                allowed: format!("User:NAME principals separated by ';' ({e})"),
            })?;
        Ok(Settings {
            enabled,
            super_users,
            allow_everyone_if_no_acl_found: self.allow_everyone_if_no_acl_found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorizer_settings_are_checked() {
        let mut c = Config::default();
        assert!(!c.acl_settings().expect("default").enabled);
        c.authorizer = "on".into();
        c.super_users = "User:admin;User:ops".into();
        let s = c.acl_settings().expect("valid");
        assert!(s.enabled && s.is_super_user("User:ops"));
        c.authorizer = "yes".into();
        assert_eq!(c.acl_settings().expect_err("bad").key, "authorizer");
        c.authorizer = "on".into();
        c.super_users = "admin".into();
        assert_eq!(c.acl_settings().expect_err("bad").key, "super_users");
    }
}
