//! `/etc/passwd` entries, read from the file's text: the one lookup of users by name or id
//! (the builder's `USER`/`--chown` inside an image's root, the runtime's state owner on the
//! host). No NSS: the static runtime has no `libnss_*` to load, and a container's users are in
//! its files anyway.

/// One line of `/etc/passwd`: `name:password:uid:gid:...` (a number that does not parse is
/// `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// How [`find`] matches a line: its name or its uid field (as written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    Name(&'a str),
    Uid(&'a str),
}

/// The first entry of `passwd` (the file's text) matching `key`; lines with fewer than four
/// fields are skipped.
pub fn find<'a>(passwd: &'a str, key: Key<'_>) -> Option<Entry<'a>> {
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| {
            f.len() > 3
                && match key {
                    Key::Name(n) => f[0] == n,
                    Key::Uid(u) => f[2] == u,
                }
        })
        .map(|f| Entry {
            name: f[0],
            uid: f[2].parse().ok(),
            gid: f[3].parse().ok(),
        })
}

/// The supplementary groups of a user as dockerd's `getUser` finds them for a container's
/// `USER` (`name`, `uid`, or empty for root): the groups `group` (`/etc/group`'s text) lists
/// the user as a member of, when `passwd` has the user and no group was named (`user:group`
/// gets none).
pub fn supplementary_gids(passwd: &str, group: &str, user: &str) -> Vec<u32> {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    if !g.is_empty() {
        return vec![];
    }
    let u = if u.is_empty() { "0" } else { u };
    let Some(name) = find(passwd, Key::Name(u))
        .or_else(|| find(passwd, Key::Uid(u)))
        .map(|e| e.name)
    else {
        return vec![];
    };
    group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() > 3 && f[3].split(',').any(|m| m.trim() == name))
        .filter_map(|f| f[2].parse().ok())
        .collect()
}

/// The name of user `uid` in the host's `/etc/passwd`, or the number when it has none (as
/// runc's state owner).
pub fn host_user_name(uid: u32) -> String {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let id = uid.to_string();
    find(&text, Key::Uid(&id)).map_or(id.clone(), |e| e.name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nbroken:x\napp:x:1234:4321::/:/bin/sh\nodd:x:zz:7::/:\n";

    #[test]
    fn by_name_and_uid() {
        let app = find(PASSWD, Key::Name("app")).unwrap();
        assert_eq!((app.uid, app.gid), (Some(1234), Some(4321)));
        assert_eq!(find(PASSWD, Key::Uid("0")).unwrap().name, "root");
        assert_eq!(find(PASSWD, Key::Uid("zz")).unwrap().uid, None);
        assert_eq!(find(PASSWD, Key::Name("broken")), None);
        assert_eq!(find(PASSWD, Key::Uid("99")), None);
    }

    #[test]
    fn supplementary_groups_of_a_user() {
        let group = "root:x:0:\nwheel:x:10:root,app\nstaff:x:50:app\nbad:x:zz:app\n";
        assert_eq!(supplementary_gids(PASSWD, group, ""), vec![10]);
        assert_eq!(supplementary_gids(PASSWD, group, "app"), vec![10, 50]);
        assert_eq!(supplementary_gids(PASSWD, group, "1234"), vec![10, 50]);
        // A group named, or a user the file lacks: none.
        assert!(supplementary_gids(PASSWD, group, "app:staff").is_empty());
        assert!(supplementary_gids(PASSWD, group, "ghost").is_empty());
    }
}
