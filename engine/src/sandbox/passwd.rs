//! USER resolution against the rootfs `/etc/passwd` and `/etc/group`, as Docker (runc's
//! `GetExecUser`) does it.

/// Who the command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// Resolves `user` (`""` = root, `name`, `uid`, `name:group`, `uid:gid`, ...). A numeric uid
/// or gid need not exist in the files; a name must.
pub(crate) fn resolve(user: &str, passwd: &str, group: &str) -> Result<ExecUser, String> {
    let (user_arg, group_arg) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_arg = if user_arg.is_empty() { "0" } else { user_arg };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 4)
        .collect();
    let numeric = user_arg.parse::<u32>().ok();
    let found = entries
        .iter()
        .find(|f| f[0] == user_arg)
        .or_else(|| numeric.and_then(|n| entries.iter().find(|f| f[2].parse() == Ok(n))));
    let (uid, mut gid, name) = match (found, numeric) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .map_err(|_| format!("bad uid in /etc/passwd for `{}`", f[0]))?,
            f[3].parse::<u32>()
                .map_err(|_| format!("bad gid in /etc/passwd for `{}`", f[0]))?,
            Some(f[0]),
        ),
        (None, Some(n)) => (n, 0, None),
        (None, None) => {
            return Err(format!(
                "unable to find user `{user_arg}`: no matching entries in /etc/passwd"
            ))
        }
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 3)
        .collect();
    let mut supplementary = Vec::new();
    match group_arg {
        Some(g) if !g.is_empty() => {
            let gnum = g.parse::<u32>().ok();
            let found = groups
                .iter()
                .find(|f| f[0] == g)
                .or_else(|| gnum.and_then(|n| groups.iter().find(|f| f[2].parse() == Ok(n))));
            gid = match (found, gnum) {
                (Some(f), _) => f[2]
                    .parse()
                    .map_err(|_| format!("bad gid in /etc/group for `{}`", f[0]))?,
                (None, Some(n)) => n,
                (None, None) => {
                    return Err(format!(
                        "unable to find group `{g}`: no matching entries in /etc/group"
                    ))
                }
            };
        }
        _ => {
            if let Some(name) = name {
                for f in &groups {
                    let members = f.get(3).copied().unwrap_or("");
                    if members.split(',').any(|m| m == name) {
                        if let Ok(n) = f[2].parse::<u32>() {
                            if !supplementary.contains(&n) {
                                supplementary.push(n);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(ExecUser {
        uid,
        gid,
        groups: supplementary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nbin:x:1:1::/:/sbin/nologin\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:root\nbin:x:1:root,bin\nwheel:x:10:root,app\napp:x:1000:\nstaff:x:50:\n";

    fn r(u: &str) -> Result<ExecUser, String> {
        resolve(u, PASSWD, GROUP)
    }

    #[test]
    fn root_by_default_with_its_groups() {
        let u = r("").unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.groups, [0, 1, 10]);
    }

    #[test]
    fn name_uses_passwd_gid_and_memberships() {
        assert_eq!(
            r("app").unwrap(),
            ExecUser {
                uid: 1000,
                gid: 1000,
                groups: vec![10]
            }
        );
        assert_eq!(r("1000").unwrap().groups, [10]);
    }

    #[test]
    fn unknown_numeric_uid_gets_gid_0() {
        assert_eq!(
            r("4242").unwrap(),
            ExecUser {
                uid: 4242,
                gid: 0,
                groups: vec![]
            }
        );
    }

    #[test]
    fn explicit_group_by_name_or_number_drops_supplementary_groups() {
        assert_eq!(
            r("app:staff").unwrap(),
            ExecUser {
                uid: 1000,
                gid: 50,
                groups: vec![]
            }
        );
        assert_eq!(r("app:77").unwrap().gid, 77);
        assert_eq!(
            r("5:6").unwrap(),
            ExecUser {
                uid: 5,
                gid: 6,
                groups: vec![]
            }
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(r("nobody")
            .unwrap_err()
            .contains("unable to find user `nobody`"));
        assert!(r("app:nogroup")
            .unwrap_err()
            .contains("unable to find group"));
        // No /etc/passwd at all (scratch): root still works, numeric ids too.
        assert_eq!(resolve("", "", "").unwrap().uid, 0);
        assert_eq!(resolve("7:8", "", "").unwrap().gid, 8);
    }
}
