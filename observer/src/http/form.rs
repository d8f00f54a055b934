//! What a login body says: the user name it names and the password it carries, read from the
//! first bytes of an `application/x-www-form-urlencoded` or JSON request body (top level and
//! one nested object). The user name is held only until `detect::identity` hashes it, the
//! password only until the pipeline hashes it under the run's in-memory key for password
//! spraying; neither is ever written.
//!
//! The body may be cut (the kernel's copy, the cap on what is kept): only values seen whole
//! count. Part of HTTP parsing: imports nothing of the crate.

/// Field names that carry the user name of a login, unless configured otherwise (compared
/// case-insensitively, `_` and `-` ignored: `user_name` is `userName` is `username`).
pub const DEFAULT_USER_FIELDS: &[&str] = &[
    "username",
    "user",
    "email",
    "login",
    "account",
    "account_name",
    "user_id",
    "login_id",
    "email_address",
    "identifier",
    "j_username",
];
/// Field names that carry a password.
pub const DEFAULT_PASSWORD_FIELDS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "passphrase",
    "j_password",
    "current_password",
];

/// How a request body is read for a login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Form,
    Json,
}

impl BodyKind {
    /// From the Content-Type: form and JSON bodies are read (`None` for the rest, multipart
    /// included). A missing type is read too: its first byte tells.
    pub fn of(content_type: Option<&[u8]>) -> Option<Self> {
        let Some(ct) = content_type else {
            return Some(BodyKind::Form);
        };
        let ct = ct.trim_ascii();
        let lower: Vec<u8> = ct.iter().take(64).map(u8::to_ascii_lowercase).collect();
        if lower.starts_with(b"application/x-www-form-urlencoded") {
            Some(BodyKind::Form)
        } else if memchr::memmem::find(&lower, b"json").is_some() {
            Some(BodyKind::Json)
        } else {
            None
        }
    }
}

/// A user name as sent, held only until it is hashed. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RawUser(Vec<u8>);

impl std::fmt::Debug for RawUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawUser({} bytes)", self.0.len())
    }
}

impl RawUser {
    pub fn new(b: &[u8]) -> Self {
        Self(b.to_vec())
    }

    /// The name itself: only for hashing.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A password as sent, held only until the pipeline hashes it, wiped when dropped. Its
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RawPassword(zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for RawPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawPassword({} bytes)", self.0.len())
    }
}

impl RawPassword {
    /// The password itself: only for hashing.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Bytes held, for the connection's memory bound.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a request body says of a login.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginFields {
    pub user: Option<RawUser>,
    /// A password field was present.
    pub password: bool,
    /// Its value, when it was a non-empty string seen whole.
    pub secret: Option<RawPassword>,
}

impl LoginFields {
    /// The body carries credentials: a user name and a password.
    pub fn credentials(&self) -> bool {
        self.user.is_some() && self.password
    }
}

/// Which fields name the user and the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldNames {
    /// In order of preference, normalised by [`norm`].
    pub user: Vec<String>,
    pub password: Vec<String>,
}

impl Default for FieldNames {
    fn default() -> Self {
        let n = |l: &[&str]| l.iter().map(|s| norm(s.as_bytes())).collect();
        Self {
            user: n(DEFAULT_USER_FIELDS),
            password: n(DEFAULT_PASSWORD_FIELDS),
        }
    }
}

/// A field name as compared: lower case, without `_` and `-`.
pub fn norm(name: &[u8]) -> String {
    name.iter()
        .filter(|c| !matches!(c, b'_' | b'-'))
        .map(|c| c.to_ascii_lowercase() as char)
        .collect()
}

impl FieldNames {
    fn user_rank(&self, key: &[u8]) -> Option<usize> {
        if key.len() > 64 {
            return None;
        }
        let k = norm(key);
        self.user.iter().position(|u| *u == k)
    }

    fn is_password(&self, key: &[u8]) -> bool {
        key.len() <= 64 && {
            let k = norm(key);
            self.password.contains(&k)
        }
    }

    /// Reads a kept body prefix; `whole` when it is the entire body.
    pub fn read(&self, kind: BodyKind, body: &[u8], whole: bool) -> LoginFields {
        let start = body.iter().position(|c| !c.is_ascii_whitespace());
        // Clients label JSON as a form (curl -d does): the first byte tells.
        if start.is_some_and(|i| body[i] == b'{') {
            return self.read_json(&body[start.unwrap_or(0)..]);
        }
        match kind {
            BodyKind::Form => self.read_form(body, whole),
            BodyKind::Json => LoginFields::default(),
        }
    }

    /// `a=1&b=2`, percent-decoded; the first occurrence of a field wins (as Werkzeug and Go
    /// read forms). The last pair of a cut body may be cut itself: it is left out.
    fn read_form(&self, body: &[u8], whole: bool) -> LoginFields {
        let mut best: Option<(usize, Vec<u8>)> = None;
        let mut password = false;
        let mut secret = None;
        let mut pairs: Vec<&[u8]> = body.split(|&c| c == b'&').collect();
        if !whole {
            pairs.pop();
        }
        for pair in pairs {
            let (k, v) = match pair.iter().position(|&c| c == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            let k = percent_decode(k);
            if self.is_password(&k) {
                // The first occurrence wins, as for the user name.
                if !password {
                    secret = raw_password(percent_decode(v));
                }
                password = true;
            } else if let Some(rank) = self.user_rank(&k)
                && best.as_ref().is_none_or(|(r, _)| rank < *r)
            {
                best = Some((rank, percent_decode(v)));
            }
        }
        LoginFields {
            user: pick(best),
            password,
            secret,
        }
    }

    /// A JSON object: string fields at the top level, then in objects one level down; the
    /// last occurrence of a field wins (as JSON.parse and Python's json read it).
    fn read_json(&self, body: &[u8]) -> LoginFields {
        let mut s = Scan {
            b: body,
            i: 0,
            names: self,
            top: None,
            nested: None,
            password: false,
            secret: None,
        };
        let _ = s.object(0);
        LoginFields {
            user: pick(s.top.or(s.nested)),
            password: s.password,
            secret: s.secret.take(),
        }
    }
}

/// A password value worth counting: empty ones are left out.
fn raw_password(v: Vec<u8>) -> Option<RawPassword> {
    (!v.is_empty()).then(|| RawPassword(zeroize::Zeroizing::new(v)))
}

/// The chosen value, normalised later; empty names name nobody.
fn pick(best: Option<(usize, Vec<u8>)>) -> Option<RawUser> {
    best.map(|(_, v)| v)
        .filter(|v| !v.trim_ascii().is_empty())
        .map(RawUser)
}

/// `%XX` escapes and `+` (a space) decoded; a malformed escape stays as sent.
pub(super) fn percent_decode(b: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// A small JSON reader over a prefix that may end anywhere: it stops (with what it found) at
/// the first byte it cannot read. Depth is bounded: deeper values are skipped.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    names: &'a FieldNames,
    /// (rank, value) of the best user field at the top level, and one level down.
    top: Option<(usize, Vec<u8>)>,
    nested: Option<(usize, Vec<u8>)>,
    password: bool,
    /// The last password string seen, at any level read.
    secret: Option<RawPassword>,
}

/// Nesting beyond which values are skipped without recursion.
const MAX_DEPTH: usize = 1;

impl Scan<'_> {
    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.eat(b':')?;
            self.ws();
            match self.b.get(self.i)? {
                b'"' => {
                    let v = self.string()?;
                    if self.names.is_password(&key) {
                        self.password = true;
                        // The last occurrence wins, as JSON parsers read duplicates.
                        self.secret = raw_password(v);
                    } else if let Some(rank) = self.names.user_rank(&key) {
                        let slot = if depth == 0 {
                            &mut self.top
                        } else {
                            &mut self.nested
                        };
                        // The last occurrence of a field wins; a better-ranked field wins.
                        if slot.as_ref().is_none_or(|(r, _)| rank <= *r) {
                            *slot = Some((rank, v));
                        }
                    }
                }
                b'{' if depth < MAX_DEPTH => {
                    if self.names.is_password(&key) {
                        self.password = true;
                    }
                    self.object(depth + 1)?;
                }
                _ => {
                    if self.names.is_password(&key) {
                        self.password = true;
                    }
                    self.skip()?;
                }
            }
            self.ws();
            match self.b.get(self.i)? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Skips one value that is not read (numbers, literals, arrays, deep objects), counting
    /// brackets outside strings: no recursion, whatever the nesting.
    fn skip(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            let c = *self.b.get(self.i)?;
            match c {
                b'"' => {
                    self.string()?;
                    if depth == 0 {
                        return Some(());
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    if depth == 0 {
                        return Some(());
                    }
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return Some(());
                    }
                }
                b',' if depth == 0 => return Some(()),
                _ => {}
            }
            self.i += 1;
        }
    }

    /// A string, unescaped (\uXXXX included, lone surrogates replaced); `None` when the
    /// prefix ends inside it.
    fn string(&mut self) -> Option<Vec<u8>> {
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = *self.b.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => return Some(out),
                b'\\' => {
                    let e = *self.b.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xd800..0xdc00).contains(&cp)
                                && self.b.get(self.i..self.i + 2) == Some(b"\\u")
                            {
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xdc00..0xe000).contains(&lo) {
                                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                                } else {
                                    self.i = save;
                                }
                            }
                            let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                            let mut buf = [0; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.b.get(self.i..self.i + 4)?;
        let s = std::str::from_utf8(h).ok()?;
        let v = u32::from_str_radix(s, 16).ok()?;
        self.i += 4;
        Some(v)
    }
}

#[cfg(test)]
#[path = "form_tests.rs"]
mod tests;
