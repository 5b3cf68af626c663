/* /: the status page for the person who looks after this computer. Reads
   GET /v1/health with an admin token kept in this tab's sessionStorage (never a
   cookie, never localStorage), and refreshes itself. It speaks the reader's language
   (sidecar._, from /assets/messages.js): what is wrong first, and what to do about it;
   then each part in sentences; the raw figures last, folded away. Nothing empty is shown. */
"use strict";

(function () {
  var el = sidecar.el, clear = sidecar.clear, _ = sidecar._, ngettext = sidecar.ngettext;
  var STORAGE_KEY = "sidecar.admin-token";
  /* Each refresh runs the daemon's health checks, one of which asks the CNS whether it
     is up: a page left open all day must not turn into a load test. Hidden tabs wait. */
  var REFRESH_SECONDS = 30;
  /* A certificate closer than this to its end is announced (the daemon's own threshold). */
  var EXPIRY_WARNING_DAYS = 30;
  var timer = null;

  function text(id, value) { document.getElementById(id).textContent = value; }

  /* The frame's words, in the reader's language. */
  function translateFrame() {
    document.documentElement.lang = sidecar.language;
    document.title = _("sidecar — status");
    text("subtitle", _("status"));
    text("docs-link", _("API reference"));
    text("signout", _("Forget the token"));
    text("login-title", _("Admin token needed"));
    text("login-why", _("This page shows the daemon's health to the person who looks after this computer. It needs a token with the admin scope. The easiest way: on this computer, run 'sidecar status --open'; it prints a link that signs this page in. Or create one with 'sidecar token create it-admin --scope admin' and paste it here."));
    text("login-storage", _("The token stays in this browser tab only and is forgotten when the tab closes."));
    text("token-label", _("Admin token"));
    text("login-submit", _("Show status"));
    text("technical-title", _("Technical details"));
  }

  /* A token arriving in the link's fragment (sidecar status --open) moves to session
     storage and leaves the address bar, the history entry and any bookmark. */
  function takeTokenFromLink() {
    var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (!match) return;
    sessionStorage.setItem(STORAGE_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }

  function token() { return sessionStorage.getItem(STORAGE_KEY); }

  function showLogin(message) {
    if (timer) { clearTimeout(timer); timer = null; }
    document.getElementById("dashboard").hidden = true;
    document.getElementById("signout").hidden = true;
    document.getElementById("login").hidden = false;
    text("login-error", message || "");
    document.body.setAttribute("data-ready", "login");
  }

  function empty(value) {
    return value === null || value === undefined || value === "" ||
      (Array.isArray(value) && value.length === 0);
  }

  function stateWord(status) {
    if (status === "ok") return _("working");
    if (status === "degraded") return _("needs attention");
    if (status === "down") return _("not working");
    return status;
  }

  function pill(check) {
    return el("span", { class: "pill " + check.status, "data-field": check.name + ".status",
      "data-value": check.status, text: stateWord(check.status) });
  }

  function card(check, title, lines) {
    return el("article", { class: "check " + check.status, "data-check": check.name },
      el("h3", null, el("span", { class: "dot " + check.status }), " ", title, " ", pill(check)),
      lines.filter(function (line) { return line; }));
  }

  function line(content, cls) { return el("p", { class: cls || null }, content); }

  /* --- Signing keys: the physician, ready or not, and the certificate's end. --- */

  var LOCK_REASONS = {
    token_absent: _("the smartcard or token is not plugged in"),
    pin_missing: _("no PIN is configured for it"),
    pin_incorrect: _("the configured PIN is wrong"),
    pin_final_try: _("the configured PIN is wrong, and one more try would block the card"),
    pin_locked: _("the card's PIN is blocked"),
    pinpad_unavailable: _("the card reader's PIN pad does not answer"),
    passphrase_missing: _("no passphrase is configured for its file"),
    passphrase_incorrect: _("the configured passphrase is wrong"),
    key_not_found: _("the key is not on the token"),
    token_error: _("the token reports an error")
  };

  function nameField(subject, label) {
    var match = new RegExp("(?:^|, )" + label + ": ([^,]+)").exec(subject || "");
    return match ? match[1] : "";
  }

  /* The physician's name as the certificate gives it. */
  function holder(key) {
    var common = nameField(key.subject, "Common Name");
    if (common) return common;
    return [nameField(key.subject, "Given Name"), nameField(key.subject, "Surname")].join(" ").trim();
  }

  function expiry(key) {
    if (empty(key.not_after)) return null;
    var seconds = (new Date(key.not_after).getTime() - Date.now()) / 1000;
    var params = { relative: sidecar.relative(seconds), date: sidecar.date(key.not_after) };
    var days = key.days_to_expiry;
    if (seconds < 0 || key.certificate_status === "expired") {
      return line(_("The certificate expired {relative}, on {date}.", params), "bad");
    }
    if (key.certificate_status === "not_yet_valid") {
      return line(_("The certificate is not valid yet: it starts on {date}.", { date: sidecar.date(key.not_before) }), "bad");
    }
    var sentence = line(_("The certificate expires {relative}, on {date}.", params),
      typeof days === "number" && days < EXPIRY_WARNING_DAYS ? "warn" : null);
    sentence.setAttribute("data-expiry", key.id);
    return sentence;
  }

  function keyState(key) {
    if (key.unlocked) return line(_("Unlocked: ready to sign."));
    var reason = LOCK_REASONS[key.locked_reason];
    return line(reason ? _("Locked: {reason}.", { reason: reason }) : _("Locked."), "warn");
  }

  function keysCard(check) {
    var keys = (check.data && check.data.keys) || [];
    if (!keys.length) return card(check, _("Signing keys"), [line(_("No signing key is configured."))]);
    return keys.map(function (key) {
      var who = holder(key);
      var what = [key.id, key.key_type ? key.key_type.toUpperCase() : null, key["default"] ? _("default key") : null]
        .filter(function (x) { return !empty(x); }).join(" · ");
      var issuer = nameField(key.issuer, "Common Name");
      return card(check, who || key.id, [
        line(_("Signing key {what}", { what: what }), "muted"),
        keyState(key),
        expiry(key),
        issuer ? line(_("Issued by {issuer}.", { issuer: issuer }), "muted") : null
      ]);
    });
  }

  /* --- Timestamps, the CNS and its outbox, the XML workers --- */

  function host(url) {
    try { return new URL(url).host; } catch (e) { return url; }
  }

  function tsaCard(check) {
    var services = (check.data && check.data.tsa) || [];
    var working = services.filter(function (s) { return s.state !== "open"; }).length;
    if (!services.length) {
      return card(check, _("Timestamp authority (TSA)"),
        [line(_("No timestamp service is configured: signatures stay at level B-B."))]);
    }
    return card(check, _("Timestamp authority (TSA)"), [
      line(ngettext("{n} timestamp service of {total} available.", "{n} timestamp services of {total} available.",
        working, { total: sidecar.number(services.length) })),
      services.filter(function (s) { return s.state === "open"; }).map(function (s) {
        return line(ngettext("{host} does not answer ({n} failure in a row).", "{host} does not answer ({n} failures in a row).",
          s.consecutive_failures || 0, { host: host(s.url) }), "warn");
      })
    ]);
  }

  /* The CNS check carries no figures: "not configured: ..." is the daemon's own word
     for a connection that was never set up (sidecar/cns/subsystem.py). */
  function cnsUnset(check) { return /^not configured/.test(check.detail || ""); }

  function cnsCard(check) {
    var said = check.status === "ok" ? _("The CNS answers.") :
      cnsUnset(check) ? _("The connection to the CNS is not configured.") : _("The CNS does not answer right now.");
    return card(check, _("Caisse nationale de santé (CNS)"), [line(said)]);
  }

  /* "2 fee notes waiting, the oldest for 4 min". */
  function outboxCard(check) {
    var data = check.data || {};
    var depth = data.depth || 0;
    var waiting = depth === 0 ? _("No fee note waiting to be sent to the CNS.") :
      ngettext("{n} fee note waiting, for {age}.", "{n} fee notes waiting, the oldest for {age}.", depth,
        { age: sidecar.duration(data.oldest_pending_seconds || 0) });
    return card(check, _("Fee notes to the CNS"), [
      line(waiting),
      data.failed ? line(ngettext("{n} fee note could not be delivered.", "{n} fee notes could not be delivered.", data.failed), "warn") : null,
      data.unknown ? line(ngettext("{n} fee note's fate at the CNS is not known yet.", "{n} fee notes' fate at the CNS is not known yet.", data.unknown), "warn") : null
    ]);
  }

  function workersCard(check) {
    var data = check.data || {};
    return card(check, _("XML signing workers"), [
      line(ngettext("{n} worker process of {total} running", "{n} worker processes of {total} running",
        data.alive || 0, { total: sidecar.number(data.workers || 0) }) + ", " +
        ngettext("{n} busy", "{n} busy", data.busy || 0) + "."),
      data.waiting ? line(ngettext("{n} request waiting for a worker.", "{n} requests waiting for a worker.", data.waiting), "warn") : null
    ]);
  }

  function errorsCard(check) {
    var recent = (check.data && check.data.recent) || [];
    return el("article", { class: "check", "data-check": check.name },
      el("h3", null, _("Recent errors"), " ", el("span", { class: "pill", text: sidecar.number(recent.length) })),
      recent.length === 0 ? el("p", { class: "muted", text: _("No error since the daemon started.") }) :
        el("ol", { class: "errors" }, recent.map(function (e, i) {
          return el("li", { "data-field": "errors.recent." + i },
            el("time", { datetime: e.time, text: sidecar.dateTime(e.time) }), " ",
            el("span", { class: "pill", text: e.area }), " ", e.message);
        })));
  }

  function otherCard(check) {
    return card(check, sidecar.words(check.name), [check.detail ? line(check.detail) : null]);
  }

  var GROUPS = [
    { title: _("Signing keys"), names: ["keys"], render: keysCard },
    { title: _("Timestamps"), names: ["tsa"], render: tsaCard },
    { title: _("CNS"), names: ["cns", "outbox"], render: function (c) { return c.name === "cns" ? cnsCard(c) : outboxCard(c); } },
    { title: _("Signing"), names: ["xml-workers"], render: workersCard },
    { title: null, names: ["errors"], render: errorsCard }, /* the card says it */
    { title: _("Other checks"), names: null, render: otherCard }
  ];

  /* --- What is wrong, and what to do --- */

  var ADVICE = {
    keys: _("Plug in the card or correct its PIN or passphrase in the configuration, then run 'sidecar doctor' on this computer. A certificate near its end is renewed with its issuer (LuxTrust)."),
    tsa: _("Check this computer's Internet connection and proxy; 'sidecar doctor' says which service does not answer."),
    cns: _("Check the connection to the CNS. Fee notes wait in the outbox and leave as soon as it is back."),
    outbox: _("Look at the undelivered fee notes in the practice software; 'sidecar doctor' tells more.")
  };

  /* A part never set up: what is missing, in the page's own words (no daemon detail). */
  function unset(check) {
    var data = check.data || {};
    if (check.name === "keys" && !(data.keys || []).length) return _("No signing key is configured: run 'sidecar setup' on this computer.");
    if (check.name === "tsa" && !(data.tsa || []).length) return _("No timestamp authority is configured: run 'sidecar setup' on this computer.");
    if (check.name === "cns" && cnsUnset(check)) return _("The connection to the CNS is not configured: run 'sidecar setup' on this computer.");
    return null;
  }

  function todo(checks) {
    var list = clear(document.getElementById("todo"));
    checks.filter(function (c) { return c.status !== "ok"; }).forEach(function (check) {
      var title = { keys: _("Signing keys"), tsa: _("Timestamp authority (TSA)"), cns: _("Caisse nationale de santé (CNS)"),
        outbox: _("Fee notes to the CNS"), "xml-workers": _("XML signing workers") }[check.name] || sidecar.words(check.name);
      var missing = unset(check);
      list.appendChild(el("li", { class: check.status, "data-todo": check.name },
        el("span", { class: "what", text: title + " — " + stateWord(check.status) }),
        !missing && check.detail ? el("span", { class: "detail", text: ": " + check.detail }) : null,
        el("span", { class: "advice", text: missing || ADVICE[check.name] ||
          _("Run 'sidecar doctor' on this computer: it says what is wrong and how to fix it.") })));
    });
    list.hidden = !list.firstChild;
  }

  /* --- The raw figures, folded away; nothing empty --- */

  function raw(value) {
    if (typeof value === "boolean") return value ? _("yes") : _("no");
    if (typeof value === "string" && /^\d{4}-\d\d-\d\dT/.test(value)) return sidecar.dateTime(value);
    if (typeof value === "number") return sidecar.number(value);
    return String(value);
  }

  function figures(prefix, data) {
    var items = [];
    Object.keys(data).forEach(function (key) {
      var value = data[key];
      var field = prefix + "." + key;
      if (empty(value)) return;
      if (Array.isArray(value) && typeof value[0] === "object") {
        value.forEach(function (row, i) { items = items.concat(figures(field + "." + i, row)); });
      } else if (typeof value === "object" && !Array.isArray(value)) {
        items = items.concat(figures(field, value));
      } else {
        var shown = Array.isArray(value) ? value.join(", ") : value;
        items.push(el("div", { class: "figure" }, el("span", { class: "label", text: field.split(".").slice(1).join(" › ") }),
          el("span", { class: "value", "data-field": field, "data-value": String(shown) },
            Array.isArray(value) ? value.map(raw).join(", ") : raw(value))));
      }
    });
    return items;
  }

  function render(health) {
    document.getElementById("login").hidden = true;
    document.getElementById("dashboard").hidden = false;
    document.getElementById("signout").hidden = false;
    text("fetch-error", "");
    text("version", "v" + health.version);
    document.getElementById("version").setAttribute("data-value", health.version);
    var overall = document.getElementById("overall");
    overall.className = "banner " + health.status;
    overall.setAttribute("data-value", health.status);
    overall.textContent = {
      ok: _("Everything works."),
      degraded: _("Working, but something needs attention."),
      down: _("Not working: signing or forwarding is impossible right now.")
    }[health.status] || health.status;
    todo(health.checks);
    text("updated", _("Updated at {time}; refreshes every {seconds} s.",
      { time: sidecar.time(new Date()), seconds: REFRESH_SECONDS }));
    var groups = clear(document.getElementById("groups"));
    var placed = {};
    GROUPS.forEach(function (group) {
      var checks = health.checks.filter(function (c) {
        return !placed[c.name] && (group.names === null || group.names.indexOf(c.name) >= 0);
      });
      if (!checks.length) return;
      checks.forEach(function (c) { placed[c.name] = true; });
      groups.appendChild(el("section", { class: "group" }, group.title ? el("h2", { text: group.title }) : null,
        checks.map(group.render)));
    });
    var technical = clear(document.getElementById("raw"));
    health.checks.forEach(function (check) {
      if (check.name === "errors" || !check.data) return;
      var items = figures(check.name, check.data);
      if (items.length) technical.appendChild(el("section", null, el("h4", { text: check.name }), el("div", { class: "figures" }, items)));
    });
    document.body.setAttribute("data-ready", "true");
  }

  function load() {
    if (timer) { clearTimeout(timer); timer = null; }
    var current = token();
    if (!current) { showLogin(""); return; }
    fetch("/v1/health", { headers: { Authorization: "Bearer " + current }, cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) {
          sessionStorage.removeItem(STORAGE_KEY);
          showLogin(_("This token was not accepted: mistyped, revoked, or replaced by a newer 'sidecar status --open' link."));
          return null;
        }
        return response.json().then(function (body) {
          if (!body.checks) {
            sessionStorage.removeItem(STORAGE_KEY);
            showLogin(_("This token has no admin scope: the page needs one that has."));
            return null;
          }
          render(body);
          return body;
        });
      })
      .catch(function () {
        text("fetch-error", _("The daemon does not answer (stopped or restarting?). Trying again every {seconds} s.",
          { seconds: REFRESH_SECONDS }));
        document.body.setAttribute("data-ready", "unreachable");
      })
      .then(function () {
        if (token() && !timer) timer = setTimeout(refresh, REFRESH_SECONDS * 1000);
      });
  }

  function refresh() {
    timer = null;
    if (document.visibilityState === "hidden") return; /* resumed by visibilitychange */
    load();
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && !timer && token()) load();
  });

  document.getElementById("login-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var input = document.getElementById("token");
    var value = input.value.trim();
    input.value = "";
    if (!value) return;
    sessionStorage.setItem(STORAGE_KEY, value);
    load();
  });
  document.getElementById("signout").addEventListener("click", function () {
    sessionStorage.removeItem(STORAGE_KEY);
    showLogin("");
  });

  translateFrame();
  takeTokenFromLink();
  load();
})();
