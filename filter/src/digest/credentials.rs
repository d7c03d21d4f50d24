//! Who answers a realm: the `credential = ["user:realm:password"]` list (Kamailio's
//! modparam, parsed strictly) and per-call credentials set by a rule.

use thiserror::Error;

/// One entry of the `credential` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub realm: String,
    pub password: String,
}

/// Credentials chosen per call (Kamailio's auth_username_avp / auth_password_avp /
/// auth_realm_avp). An empty realm answers whatever realm challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallCredentials<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub realm: &'a str,
}

/// What is wrong with one `credential` entry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CredentialProblem {
    #[error("expected \"user:realm:password\"")]
    Shape,
    #[error("the user is empty")]
    EmptyUser,
    #[error("the realm is empty")]
    EmptyRealm,
    #[error("the password is empty")]
    EmptyPassword,
    #[error("whitespace around or inside the user or realm")]
    Whitespace,
}

/// A bad entry, named by its index and its user (the password never goes to a log).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("credential[{index}] ({shown}): {problem}")]
pub struct CredentialError {
    pub index: usize,
    pub shown: String,
    pub problem: CredentialProblem,
}

/// Parses `user:realm:password`; the password is everything after the second ':' and
/// may contain ':' itself.
pub fn parse_credential(entry: &str) -> Result<Credential, CredentialProblem> {
    let mut parts = entry.splitn(3, ':');
    let (Some(username), Some(realm), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(CredentialProblem::Shape);
    };
    if username.is_empty() {
        return Err(CredentialProblem::EmptyUser);
    }
    if realm.is_empty() {
        return Err(CredentialProblem::EmptyRealm);
    }
    if password.is_empty() {
        return Err(CredentialProblem::EmptyPassword);
    }
    if username
        .chars()
        .chain(realm.chars())
        .any(char::is_whitespace)
    {
        return Err(CredentialProblem::Whitespace);
    }
    Ok(Credential {
        username: username.to_string(),
        realm: realm.to_string(),
        password: password.to_string(),
    })
}

/// Parses the whole list; the first bad entry is the error.
pub fn parse_credentials<S: AsRef<str>>(entries: &[S]) -> Result<Vec<Credential>, CredentialError> {
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let entry = entry.as_ref();
            parse_credential(entry).map_err(|problem| CredentialError {
                index,
                shown: match entry.split_once(':') {
                    Some((user, _)) => format!("user {user:?}"),
                    None => "no ':' in the entry".to_string(),
                },
                problem,
            })
        })
        .collect()
}

/// The username and password that answer `realm`: the call's own credentials first,
/// then the list entry for exactly that realm.
pub fn credentials_for<'a>(
    realm: &str,
    call: Option<CallCredentials<'a>>,
    list: &'a [Credential],
) -> Option<(&'a str, &'a str)> {
    if let Some(call) = call
        && !call.username.is_empty()
        && (call.realm.is_empty() || call.realm == realm)
    {
        return Some((call.username, call.password));
    }
    list.iter()
        .find(|c| c.realm == realm)
        .map(|c| (c.username.as_str(), c.password.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_keeps_colons_in_the_password() {
        assert_eq!(
            parse_credential("trunkuser:trunk.test:pa:ss:").unwrap(),
            Credential {
                username: "trunkuser".into(),
                realm: "trunk.test".into(),
                password: "pa:ss:".into(),
            }
        );
    }

    #[test]
    fn strict_errors_name_the_entry_without_its_password() {
        let list = ["a:r:p", "bob:trunk.test:", "x"];
        let err = parse_credentials(&list).unwrap_err();
        assert_eq!(
            err.to_string(),
            "credential[1] (user \"bob\"): the password is empty"
        );
        assert_eq!(
            parse_credentials(&["x"]).unwrap_err().to_string(),
            "credential[0] (no ':' in the entry): expected \"user:realm:password\""
        );
        for (entry, problem) in [
            ("u:r", CredentialProblem::Shape),
            (":r:p", CredentialProblem::EmptyUser),
            ("u::p", CredentialProblem::EmptyRealm),
            ("u :r:p", CredentialProblem::Whitespace),
            ("u:r r:p", CredentialProblem::Whitespace),
        ] {
            assert_eq!(parse_credential(entry), Err(problem), "{entry}");
        }
    }

    #[test]
    fn call_credentials_first_then_the_list_by_exact_realm() {
        let list = parse_credentials(&["u1:a.test:p1", "u2:b.test:p2"]).unwrap();
        assert_eq!(credentials_for("b.test", None, &list), Some(("u2", "p2")));
        assert_eq!(credentials_for("B.test", None, &list), None);
        let any_realm = CallCredentials {
            username: "c",
            password: "cp",
            realm: "",
        };
        assert_eq!(
            credentials_for("b.test", Some(any_realm), &list),
            Some(("c", "cp"))
        );
        let only_a = CallCredentials {
            realm: "a.test",
            ..any_realm
        };
        assert_eq!(
            credentials_for("b.test", Some(only_a), &list),
            Some(("u2", "p2"))
        );
        let unset = CallCredentials {
            username: "",
            ..any_realm
        };
        assert_eq!(
            credentials_for("a.test", Some(unset), &list),
            Some(("u1", "p1"))
        );
    }
}
