/* /docs: renders the daemon's own /openapi.json as a readable reference, with a
   copy-paste curl example per route. Works offline: everything comes from the daemon. */
"use strict";

(function () {
  var el = sidecar.el, clear = sidecar.clear;
  var BASE = window.location.origin;
  var SAMPLE_UUID = "0b6c8a5e-3f1d-4c2a-9e7b-5d4f3a2b1c0d";

  /* What a realistic call looks like, per operation: query string, body files, output.
     Routes not listed here still get an example built from their description. */
  var HINTS = {
    getUuids: { query: "count=5" },
    createTimestamp: {
      before: "openssl ts -query -data document.pdf -sha256 -cert -out request.tsq",
      file: "request.tsq", out: "reply.tsr"
    },
    signXml: { query: "level=B-LT", file: "document.xml", out: "document-signed.xml" },
    signPdf: { query: "level=B-LT&reason=Fee%20note", file: "document.pdf", out: "document-signed.pdf" },
    signForm: {
      form: [["xml", "fee-note.xml", "application/xml"], ["pdf", "fee-note.pdf", "application/pdf"]],
      out: "fee-note-signed.xml"
    },
    verify: { file: "document-signed.xml" },
    depositFeeNote: { file: "fee-note-signed.xml" },
    listMessages: { query: "status=queued" },
    pidSimulation: { file: "pid-simulation.xml", out: "pid-simulation-answer.xml" },
    pidValidation: { file: "pid-validation.xml", out: "pid-validation-answer.xml" },
    pidContestation: { file: "pid-contestation.xml", out: "pid-contestation-answer.xml" }
  };
  var PATH_EXAMPLES = { uuid: SAMPLE_UUID, profile: "fee-note" };
  var EXTENSIONS = {
    "application/xml": "xml", "text/xml": "xml", "application/pdf": "pdf",
    "application/timestamp-query": "tsq", "application/timestamp-reply": "tsr"
  };

  var TAG_TITLES = { cns: "CNS", service: "Service" };
  function tagTitle(tag) { return TAG_TITLES[tag] || sidecar.words(tag); }

  function quote(s) { return "'" + String(s).replace(/'/g, "'\\''") + "'"; }

  function curlExample(method, path, op) {
    var hint = HINTS[op.operationId] || {};
    var url = path.replace(/\{([^}]+)\}/g, function (_, name) {
      return PATH_EXAMPLES[name] || name.toUpperCase();
    });
    if (hint.query) url += "?" + hint.query;
    var lines = [];
    var args = ["curl -sS"];
    var secured = op.security && op.security.length > 0;
    if (secured) {
      var admin = op["x-sidecar-scope"] === "admin";
      args.push('-H "Authorization: Bearer $' + (admin ? "ADMIN_TOKEN" : "TOKEN") + '"');
    }
    var types = op.requestBody ? Object.keys(op.requestBody.content || {}) : [];
    var sendsBody = false;
    if (hint.form) {
      hint.form.forEach(function (part) { args.push("-F " + quote(part[0] + "=@" + part[1] + ";type=" + part[2])); });
      sendsBody = true;
    } else if (types.length) {
      var type = types[0] === "*/*" ? "application/octet-stream" : types[0];
      if (type === "multipart/form-data") {
        args.push("-F " + quote("file=@document"));
      } else {
        args.push("-H " + quote("Content-Type: " + type));
        args.push("--data-binary @" + (hint.file || "body." + (EXTENSIONS[type] || "bin")));
      }
      sendsBody = true;
    }
    if (method !== "GET" && !(method === "POST" && sendsBody)) args.push("-X " + method);
    var responseTypes = Object.keys(((op.responses || {})[successCode(op)] || {}).content || {});
    if (hint.out) args.push("-o " + hint.out);
    else if (responseTypes[0] && EXTENSIONS[responseTypes[0]]) args.push("-o answer." + EXTENSIONS[responseTypes[0]]);
    args.push(quote(BASE + url));
    if (hint.before) lines.push(hint.before);
    lines.push(args.join(" \\\n     "));
    return lines.join("\n");
  }

  function successCode(op) {
    return Object.keys(op.responses || {}).filter(function (c) { return c < "300"; })[0] || "200";
  }

  function resolve(doc, schema) {
    var seen = 0;
    while (schema && schema.$ref && seen++ < 10) {
      var name = schema.$ref.split("/").pop();
      schema = (doc.components.schemas || {})[name];
    }
    return schema || {};
  }

  function typeLabel(doc, schema) {
    if (!schema) return "";
    if (schema.$ref) return schema.$ref.split("/").pop();
    var type = Array.isArray(schema.type) ? schema.type.join(" | ") : (schema.type || "any");
    if (schema.type === "array" && schema.items) type = typeLabel(doc, schema.items) + "[]";
    if (schema.format) type += " (" + schema.format + ")";
    if (schema.enum) type += ": " + schema.enum.join(" | ");
    if (schema.minimum !== undefined || schema.maximum !== undefined) {
      type += " " + (schema.minimum !== undefined ? schema.minimum : "") + "–" + (schema.maximum !== undefined ? schema.maximum : "");
    }
    if (schema["default"] !== undefined) type += ", default " + schema["default"];
    return type;
  }

  function schemaTable(doc, schema) {
    schema = resolve(doc, schema);
    var props = schema.properties || {};
    var required = schema.required || [];
    var rows = Object.keys(props).map(function (name) {
      var prop = props[name];
      var nested = null;
      var item = prop.type === "array" ? resolve(doc, prop.items) : null;
      if (prop.type === "object" && prop.properties) nested = schemaTable(doc, prop);
      else if (item && item.properties && !(prop.items && prop.items.$ref)) nested = schemaTable(doc, item);
      return el("tr", null,
        el("td", null, el("code", { text: name }), required.indexOf(name) >= 0 ? el("span", { class: "req", text: " required" }) : null),
        el("td", null, el("code", { text: typeLabel(doc, prop) })),
        el("td", null, prop.description || "", nested));
    });
    if (!rows.length) return el("p", { class: "muted", text: schema.description || "" });
    return el("table", { class: "schema" },
      el("thead", null, el("tr", null, el("th", { text: "field" }), el("th", { text: "type" }), el("th", { text: "notes" }))),
      el("tbody", null, rows));
  }

  function operationSection(doc, method, path, op) {
    var implemented = op["x-sidecar-implemented"] !== false;
    var scope = op["x-sidecar-scope"];
    var example = curlExample(method, path, op);
    var params = op.parameters || [];
    var responses = op.responses || {};
    var success = successCode(op);
    var successContent = (responses[success] || {}).content || {};
    var section = el("section", { class: "op", id: op.operationId, "data-operation": op.operationId },
      el("h3", null,
        el("span", { class: "method " + method.toLowerCase(), text: method }), " ",
        el("code", { class: "path", text: path }), " ",
        scope ? el("span", { class: "pill", text: "scope: " + scope }) : el("span", { class: "pill public", text: "public" }),
        implemented ? null : el("span", { class: "pill todo", text: "not built in this version (501)" })),
      el("p", { text: op.summary || "" }),
      op.description ? el("p", { class: "description", text: op.description }) : null,
      params.length ? el("div", null, el("h4", { text: "Parameters" }),
        el("table", null,
          el("thead", null, el("tr", null, el("th", { text: "name" }), el("th", { text: "in" }), el("th", { text: "type" }), el("th", { text: "description" }))),
          el("tbody", null, params.map(function (p) {
            return el("tr", null,
              el("td", null, el("code", { text: p.name }), p.required ? el("span", { class: "req", text: " required" }) : null),
              el("td", { text: p["in"] }),
              el("td", null, el("code", { text: typeLabel(doc, p.schema) })),
              el("td", { text: p.description || "" }));
          })))) : null,
      op.requestBody ? el("div", null, el("h4", { text: "Request body" }),
        el("p", null, Object.keys(op.requestBody.content).map(function (t, i) {
          return [i ? " or " : "", el("code", { text: t })];
        }))) : null,
      el("h4", { text: "Answer" }),
      el("p", null, el("code", { text: success }), " ", Object.keys(successContent).map(function (t) {
        return el("code", { text: t });
      })),
      Object.keys(successContent).map(function (t) {
        return successContent[t].schema ? schemaTable(doc, successContent[t].schema) : null;
      }),
      el("details", null, el("summary", { text: "Error answers (application/problem+json)" }),
        el("table", null, el("tbody", null, Object.keys(responses).filter(function (c) { return c !== success; }).map(function (c) {
          return el("tr", null, el("td", null, el("code", { text: c })), el("td", { text: responses[c].description || "" }));
        })))),
      el("h4", { text: "Example" }),
      el("div", { class: "example" },
        sidecar.copyButton(function () { return example; }),
        el("pre", { class: "curl" }, el("code", { text: example }))));
    return section;
  }

  function render(doc) {
    var content = clear(document.getElementById("content"));
    var toc = clear(document.getElementById("toc"));
    document.getElementById("version").textContent = "v" + doc.info.version;
    var setup = [
      "# Once per shell: the token of the 'default' client, written on first start.",
      "# With SIDECAR_HOME set (portable install, sandbox): $SIDECAR_HOME/default.token",
      "# Otherwise Linux ~/.config/sidecar/default.token, Windows %LOCALAPPDATA%\\sidecar\\default.token",
      'TOKEN="$(cat "${SIDECAR_HOME:-$HOME/.config/sidecar}/default.token")"',
      "# Only for /metrics and the detailed /v1/health: a client with the admin scope.",
      'ADMIN_TOKEN="$(sidecar token create monitoring --scope admin)"'
    ].join("\n");
    content.appendChild(el("section", { class: "intro" },
      el("h2", { text: doc.info.title + " " + doc.info.version }),
      el("p", { text: doc.info.description || "" }),
      el("h3", { text: "Getting started" }),
      el("p", null, "Every example below is a complete ", el("code", { text: "curl" }),
        " command for this daemon (", el("code", { text: BASE }), "). Set the token once:"),
      el("div", { class: "example" }, sidecar.copyButton(function () { return setup; }),
        el("pre", { class: "curl", id: "setup" }, el("code", { text: setup }))),
      el("p", null, "Errors are ", el("code", { text: "application/problem+json" }),
        " with a stable ", el("code", { text: "code" }), " field to switch on; every answer carries ",
        el("code", { text: "X-Request-Id" }), ". Runnable end-to-end programs in curl, Python, Java, Node, C#, ",
        "PowerShell and Delphi are in the ", el("code", { text: "examples/" }), " folder of the distribution.")));

    var byTag = {};
    var order = [];
    Object.keys(doc.paths).forEach(function (path) {
      Object.keys(doc.paths[path]).forEach(function (method) {
        var op = doc.paths[path][method];
        var tag = (op.tags && op.tags[0]) || "other";
        if (!byTag[tag]) { byTag[tag] = []; order.push(tag); }
        byTag[tag].push([method.toUpperCase(), path, op]);
      });
    });
    order.forEach(function (tag) {
      toc.appendChild(el("h4", { text: tagTitle(tag) }));
      toc.appendChild(el("ul", null, byTag[tag].map(function (entry) {
        return el("li", null, el("a", { href: "#" + entry[2].operationId },
          el("span", { class: "method " + entry[0].toLowerCase(), text: entry[0] }), " ", entry[1]));
      })));
      content.appendChild(el("h2", { class: "tag", id: "tag-" + tag, text: tagTitle(tag) }));
      byTag[tag].forEach(function (entry) {
        content.appendChild(operationSection(doc, entry[0], entry[1], entry[2]));
      });
    });
    var schemas = (doc.components && doc.components.schemas) || {};
    content.appendChild(el("h2", { class: "tag", id: "schemas", text: "Schemas" }));
    toc.appendChild(el("h4", null, el("a", { href: "#schemas", text: "Schemas" })));
    Object.keys(schemas).forEach(function (name) {
      content.appendChild(el("section", { class: "op", id: "schema-" + name },
        el("h3", null, el("code", { text: name })),
        schemas[name].description ? el("p", { text: schemas[name].description }) : null,
        schemaTable(doc, schemas[name])));
    });
    if (window.location.hash) {
      var target = document.getElementById(window.location.hash.slice(1));
      if (target) target.scrollIntoView();
    }
    document.body.setAttribute("data-ready", "true");
  }

  fetch("/openapi.json", { cache: "no-store" })
    .then(function (response) {
      if (!response.ok) throw new Error("/openapi.json answered " + response.status);
      return response.json();
    })
    .then(render)
    .catch(function (error) {
      var content = clear(document.getElementById("content"));
      content.appendChild(el("p", { class: "error", text: "Could not load the API description: " + error.message }));
      document.body.setAttribute("data-ready", "error");
    });
})();
