// A JSON login on Express with Passport's local strategy, as an API would run it: POST
// /api/login with {"username","password"} answers 401 to bad credentials (Passport's own
// answer) and a bearer token to good ones; GET /api/me takes that token. Accounts are
// member000..member999, each with the password "<name>:Tulip!"; the test knows the rule and
// nothing is stored. Modules come from NODE_PATH, installed by `cargo xtask setup` (pinned).
// Usage: node express_login.js PORT
'use strict';
const crypto = require('crypto');
const express = require('express');
const passport = require('passport');
const LocalStrategy = require('passport-local').Strategy;

const tokens = new Map();

passport.use(
  new LocalStrategy({ session: false }, (username, password, done) => {
    const ok = /^member\d{3}$/.test(username) && password === `${username}:Tulip!`;
    return done(null, ok ? { name: username } : false);
  })
);

const app = express();
app.use(express.json({ limit: '16kb' }));

app.post('/api/login', passport.authenticate('local', { session: false }), (req, res) => {
  const token = crypto.randomBytes(24).toString('hex');
  tokens.set(token, req.user.name);
  res.json({ token });
});

app.get('/api/me', (req, res) => {
  const auth = req.get('authorization') || '';
  const name = tokens.get(auth.replace(/^Bearer /, ''));
  if (!name) {
    return res.status(401).json({ error: 'invalid token' });
  }
  res.json({ name, orders: 3 });
});

const port = Number(process.argv[2]);
app.listen(port, '127.0.0.1');
