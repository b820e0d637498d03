// The iDaaS shell prelude: the brief's functions (createConnection, create_pipeline, ...), alias globals,
// catalogue commands, result display, error explanations and completion. Everything that talks to the
// server goes through `native.api` (the Open API); rendering of API answers is done by `native.render`.
(function (native, settings) {
  "use strict";
  const G = globalThis;
  const hidden = (obj, name, value) =>
    Object.defineProperty(obj, name, { value, writable: true, configurable: true, enumerable: false });

  // ---------------------------------------------------------------- errors

  class ShellError extends Error {
    constructor(message, kind) {
      super(message);
      this.name = "ShellError";
      this.kind = kind || "invalid_input";
    }
  }
  const fail = (message, kind) => {
    throw new ShellError(message, kind);
  };

  /** Damerau-Levenshtein distance (optimal string alignment), case-insensitive. */
  function distance(a, b) {
    a = a.toLowerCase();
    b = b.toLowerCase();
    const d = [];
    for (let i = 0; i <= a.length; i++) d.push([i]);
    for (let j = 1; j <= b.length; j++) d[0][j] = j;
    for (let i = 1; i <= a.length; i++) {
      for (let j = 1; j <= b.length; j++) {
        const cost = a[i - 1] === b[j - 1] ? 0 : 1;
        d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
        if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
          d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
        }
      }
    }
    return d[a.length][b.length];
  }

  /** The candidate nearest to `name`, if one is near enough to be a likely typo. */
  function nearest(name, candidates) {
    let best = null;
    let bestScore = Infinity;
    for (const c of candidates) {
      if (c === name) continue;
      let score = distance(name, c);
      if (c.toLowerCase() === name.toLowerCase()) score = 0.5;
      else if (c.toLowerCase().startsWith(name.toLowerCase())) score -= 0.25;
      if (score < bestScore || (score === bestScore && c < best)) {
        best = c;
        bestScore = score;
      }
    }
    const limit = Math.max(1, Math.min(3, Math.floor(name.length / 3)));
    return bestScore <= limit ? best : null;
  }

  /** ` (did you mean x()?)`, for the middle of a sentence. */
  const hint = (name, candidates, call) => {
    const n = nearest(name, candidates);
    return n ? ` (did you mean ${n}${call ? "()" : ""}?)` : "";
  };

  const didYouMean = (name, candidates, call) => {
    const n = nearest(name, candidates);
    return n ? `; did you mean ${n}${call ? "()" : ""}?` : "";
  };

  // ---------------------------------------------------------------- the Open API

  function api(method, segments, body, query) {
    const text = native.api(method, JSON.stringify(segments), body === undefined ? "" : JSON.stringify(body),
      query === undefined ? "" : JSON.stringify(query));
    const answer = JSON.parse(text);
    if (answer.error) fail(answer.error.message, answer.error.kind);
    // The server's own text (`{"ok":TEXT}`), so that --json prints its answer exactly, numbers included.
    if (answer.ok !== null && typeof answer.ok === "object") hidden(answer.ok, "__raw", text.slice(6, -1));
    return answer.ok;
  }

  const NOT_YET = "unsupported";
  const notYet = (sentence) => fail(sentence, NOT_YET);
  const MODEL_MESSAGE =
    "iModels (createModel(...).readFrom(...).startSync()) are not available on this server yet; " +
    "create_pipeline(...) replicates a table in the meantime";
  const REST_MESSAGE = "Data APIs (createREST(...).publish()) are not available on this server yet";
  const MODEL_STATUS_MESSAGE = (what) => `iModel status (${what}.status()) is not available on this server yet`;

  // ---------------------------------------------------------------- results and display

  const KIND = "__kind";
  /** Marks an API answer with how it is rendered; it stays plain data for scripts. */
  function result(kind, data, extra) {
    hidden(data, KIND, kind);
    if (extra !== undefined) hidden(data, "__extra", extra);
    return data;
  }
  const message = (text) => result("message", { message: text });

  const handles = new WeakSet();
  const isHandle = (v) => (typeof v === "object" || typeof v === "function") && v !== null && handles.has(v);

  function inspect(v) {
    if (v === undefined) return "undefined";
    if (isHandle(v)) return v.__display();
    if (typeof v === "function") return `[function ${v.name || "anonymous"}]`;
    if (typeof v === "bigint") return `${v}n`;
    if (typeof v === "symbol") return v.toString();
    const seen = new WeakSet();
    const text = JSON.stringify(
      v,
      function (key, x) {
        if (typeof x === "bigint") return `${x}n`;
        if (typeof x === "function") return isHandle(x) ? String(x) : `[function ${x.name || "anonymous"}]`;
        if (x !== null && typeof x === "object") {
          if (isHandle(x)) return String(x);
          if (seen.has(x)) return "[circular]";
          seen.add(x);
        }
        return x;
      },
      2,
    );
    return text === undefined ? String(v) : text;
  }

  function toJson(v) {
    if (isHandle(v)) return JSON.stringify(v.__json(), null, 2);
    if (v !== null && typeof v === "object" && typeof v.__raw === "string") return native.render("json", v.__raw, "");
    if (v !== null && typeof v === "object" && v[KIND] === "message") return JSON.stringify(v, null, 2);
    return inspect(v);
  }

  /** How a value is printed: by the server's renderer for API answers, as readable JSON otherwise. */
  function render(v) {
    if (settings.json) return toJson(v);
    if (v !== null && typeof v === "object" && typeof v[KIND] === "string") {
      return native.render(v[KIND], JSON.stringify(v), v.__extra === undefined ? "" : String(v.__extra));
    }
    return inspect(v);
  }

  /** What the prompt echoes for a result: nothing for `undefined`, strings quoted. */
  function show(v) {
    if (v === undefined) return null;
    if (typeof v === "string" && !settings.json) return JSON.stringify(v);
    return render(v);
  }

  function print(...args) {
    const parts = args.map((a) => (typeof a === "string" ? a : render(a)));
    native.write(parts.join(" ").replace(/\n$/, "") + "\n");
  }

  // ---------------------------------------------------------------- aliases as globals

  const RESERVED = new Set(
    ("break case catch class const continue debugger default delete do else export extends false finally for " +
      "function if import in instanceof new null return super switch this throw true try typeof var void while " +
      "with yield let static enum await implements package protected interface private public undefined NaN " +
      "Infinity eval arguments").split(" "),
  );
  const bound = new Map(); // alias -> "connection" | "pipeline"
  const connectionInfo = new Map(); // alias -> ConnectionInfo
  const notes = [];

  const defined = new Set(); // aliases this shell made globals of

  function bind(alias, kind, handle) {
    if (bound.has(alias)) {
      if (defined.has(alias)) G[alias] = handle;
      bound.set(alias, kind);
      return;
    }
    const getter = `${kind}("${alias}")`;
    if (RESERVED.has(alias)) {
      notes.push(`alias '${alias}' is a JavaScript keyword; reach it as ${getter}`);
      bound.set(alias, kind);
      return;
    }
    if (Object.prototype.hasOwnProperty.call(G, alias)) {
      notes.push(`alias '${alias}' is also the name of a shell function; reach the ${kind} as ${getter}`);
      bound.set(alias, kind);
      return;
    }
    Object.defineProperty(G, alias, { value: handle, writable: true, configurable: true, enumerable: false });
    bound.set(alias, kind);
    defined.add(alias);
  }

  function unbind(alias) {
    if (defined.has(alias) && isHandle(G[alias])) delete G[alias];
    defined.delete(alias);
    bound.delete(alias);
    connectionInfo.delete(alias);
    tableCache.delete(alias);
    if (current === alias) current = null;
  }

  // ---------------------------------------------------------------- connections and tables

  const CONNECTION_METHODS = ["tables", "desc", "peek", "count", "test", "info", "table", "delete"];
  const TABLE_METHODS = ["desc", "peek", "count", "status"];
  const tableCache = new Map(); // alias -> [table names]
  const columnCache = new Map(); // "alias\ttable" -> [column names]
  const PROXY_IGNORED = new Set(["then", "toJSON", "inspect", "asymmetricMatch", "$$typeof", "nodeType"]);

  const describeConnection = (c) =>
    `${c.alias} (${c.type} ${c.host}:${c.port}${c.database ? ", database " + c.database : ""}` +
    `${c.daas_db ? ", DaaS DB" : ""})`;

  class Connection {
    constructor(info) {
      hidden(this, "__alias", info.alias);
    }
    tables() {
      const list = api("GET", ["connections", this.__alias, "tables"]);
      tableCache.set(this.__alias, list.map((t) => t.name));
      return result("tables", list);
    }
    desc(table) {
      return describeTable(this.__alias, tableName(table));
    }
    peek(table, n, columns) {
      return peekRows(this.__alias, tableName(table), n, columns);
    }
    count(table) {
      return countRows(this.__alias, tableName(table));
    }
    test() {
      return result("check", api("POST", ["connections", this.__alias, "test"]), this.__alias);
    }
    info() {
      const info = api("GET", ["connections", this.__alias]);
      connectionInfo.set(this.__alias, info);
      return result("connection", info);
    }
    table(name) {
      return tableRef(this.__alias, tableName(name));
    }
    delete(options) {
      return deleteObject("connection", this.__alias, options);
    }
    toString() {
      return this.__alias;
    }
    __info() {
      let info = connectionInfo.get(this.__alias);
      if (!info) {
        info = api("GET", ["connections", this.__alias]);
        connectionInfo.set(this.__alias, info);
      }
      return info;
    }
    __display() {
      const note = this.__note ? this.__note + " " : "";
      this.__note = undefined;
      const info = connectionInfo.get(this.__alias);
      return `${note}connection ${info ? describeConnection(info) : this.__alias}`;
    }
    __json() {
      return this.__info();
    }
    __completions() {
      return CONNECTION_METHODS.map((m) => m + "(").concat(tablesOf(this.__alias));
    }
  }

  function tableName(t) {
    if (typeof t === "string" && t.trim() !== "") return t.trim();
    if (t instanceof TableRef) return t.table;
    fail("name the table as a string, e.g. \"Customer\"");
  }

  function connectionHandle(info) {
    connectionInfo.set(info.alias, info);
    const target = new Connection(info);
    const handle = new Proxy(target, {
      get(t, p, receiver) {
        if (typeof p === "symbol" || p in t || p.startsWith("__")) return Reflect.get(t, p, receiver);
        if (PROXY_IGNORED.has(p)) return undefined;
        return tableRef(t.__alias, p);
      },
      set(t, p, v) {
        if (p === "__note") {
          t.__note = v;
          return true;
        }
        fail(`${t.__alias} is a connection; its tables cannot be assigned`);
      },
    });
    handles.add(handle);
    return handle;
  }

  class TableRef {
    constructor(connection, table) {
      this.connection = connection;
      this.table = table;
    }
    desc() {
      return describeTable(this.connection, this.table);
    }
    peek(n, columns) {
      return peekRows(this.connection, this.table, n, columns);
    }
    count() {
      return countRows(this.connection, this.table);
    }
    status() {
      notYet(MODEL_STATUS_MESSAGE(String(this)));
    }
    toString() {
      return `${this.connection}.${this.table}`;
    }
    __display() {
      return `table ${this} (desc(), peek(n) and count() look inside)`;
    }
    __json() {
      return { connection: this.connection, table: this.table };
    }
    __completions() {
      return TABLE_METHODS.map((m) => m + "(");
    }
  }

  /** `conn.Customer`, or `conn.crm.Customer` for a table of another database: callable so that a
   * mistyped method (`conn.tabels()`) gets a clear answer instead of "not a function". */
  function tableRef(connection, table) {
    const target = () => {};
    Object.setPrototypeOf(target, TableRef.prototype);
    target.connection = connection;
    target.table = table;
    const own = (p) => p === "connection" || p === "table" || p in TableRef.prototype;
    const handle = new Proxy(target, {
      get(t, p) {
        if (typeof p === "symbol" || own(p) || p.startsWith("__")) return Reflect.get(t, p);
        if (PROXY_IGNORED.has(p)) return undefined;
        if (t.table.includes(".")) {
          fail(`${t} has no '${p}'${hint(p, TABLE_METHODS, true)}; a table offers ${
            TABLE_METHODS.map((m) => m + "()").join(", ")}`);
        }
        return tableRef(t.connection, `${t.table}.${p}`);
      },
      apply(t) {
        const parts = t.table.split(".");
        const last = parts.pop();
        const owner = parts.length ? `${t.connection}.${parts.join(".")}` : t.connection;
        const methods = parts.length ? TABLE_METHODS : CONNECTION_METHODS;
        fail(`${owner}.${last} is not a function${hint(last, methods, true)}; ${owner} offers ${
          methods.map((m) => m + "()").join(", ")}, and ${owner}.${last} without () is a table`);
      },
    });
    handles.add(handle);
    return handle;
  }

  function tablesOf(alias) {
    if (!tableCache.has(alias)) {
      try {
        tableCache.set(alias, api("GET", ["connections", alias, "tables"]).map((t) => t.name));
      } catch (e) {
        tableCache.set(alias, []);
      }
    }
    return tableCache.get(alias);
  }

  function columnsOf(alias, table) {
    const key = `${alias}\t${table}`;
    if (!columnCache.has(key)) {
      try {
        columnCache.set(key, api("GET", ["connections", alias, "tables", table]).columns.map((c) => c.name));
      } catch (e) {
        return [];
      }
    }
    return columnCache.get(key);
  }

  function describeTable(alias, table) {
    const schema = api("GET", ["connections", alias, "tables", table]);
    columnCache.set(`${alias}\t${table}`, schema.columns.map((c) => c.name));
    return result("schema", schema);
  }

  const DEFAULT_PEEK = 10;
  const MAX_PEEK = 1000;

  function peekRows(alias, table, n, columns) {
    if (Array.isArray(n) && columns === undefined) {
      columns = n;
      n = undefined;
    }
    const limit = n === undefined || n === null ? DEFAULT_PEEK : Number(n);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PEEK) {
      fail(`peek takes a number of rows from 1 to ${MAX_PEEK}, e.g. peek(5)`);
    }
    const rows = api("GET", ["connections", alias, "tables", table, "rows"], undefined, { limit: String(limit) });
    columnCache.set(`${alias}\t${table}`, rows.columns.slice());
    if (columns !== undefined) {
      if (typeof columns === "string") columns = [columns];
      if (!Array.isArray(columns) || columns.length === 0) fail("name the columns as a list, e.g. [\"id\", \"name\"]");
      const index = columns.map((c) => {
        const i = rows.columns.indexOf(String(c));
        if (i < 0) {
          fail(`table ${rows.table.namespace}.${rows.table.name} has no column '${c}'${
            didYouMean(String(c), rows.columns)}`);
        }
        return i;
      });
      rows.__raw = undefined;
      rows.columns = index.map((i) => rows.columns[i]);
      rows.rows = rows.rows.map((r) => index.map((i) => r[i]));
    }
    return result("rows", rows);
  }

  function countRows(alias, table) {
    return result("count", api("GET", ["connections", alias, "tables", table, "count"]));
  }

  const CONNECTION_KEYS = {
    alias: "alias", type: "type", host: "host", ip: "host", port: "port", user: "user", password: "password",
    db: "database", database: "database", DaaSDB: "DaaSDB", daas_db: "DaaSDB",
  };

  /** The brief's `createConnection({alias, ip, port, user, password, db}, {DaaSDB: true})`. Without a `type`
   * the server finds out what the database speaks. */
  function createConnection(options, flags) {
    if (options === null || typeof options !== "object" || Array.isArray(options)) {
      fail('createConnection takes an object, e.g. createConnection({alias: "crm", ip: "db.example", port: 3306, ' +
        'user: "demo", password: "...", db: "crm"})');
    }
    const spec = {};
    for (const source of [options, flags || {}]) {
      if (source === null || typeof source !== "object") fail("the options of createConnection must be objects");
      for (const key of Object.keys(source)) {
        const field = CONNECTION_KEYS[key];
        if (!field) {
          fail(`createConnection does not know the option '${key}'${hint(key, Object.keys(CONNECTION_KEYS))}; ` +
            "its options are alias, ip (or host), port, user, password, db, type and DaaSDB");
        }
        spec[field] = source[key];
      }
    }
    for (const key of ["alias", "host", "user"]) {
      if (spec[key] === undefined || spec[key] === null || spec[key] === "") {
        fail(`createConnection needs ${key === "host" ? "ip (or host)" : key}`);
      }
    }
    if (spec.port !== undefined) {
      const port = Number(spec.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`port ${spec.port} is not a TCP port (1 to 65535)`);
      spec.port = port;
    }
    for (const key of ["alias", "host", "user", "password", "database", "type"]) {
      if (spec[key] !== undefined && spec[key] !== null) spec[key] = String(spec[key]);
    }
    if (spec.DaaSDB !== undefined) spec.DaaSDB = Boolean(spec.DaaSDB);
    const info = api("POST", ["connections"], spec);
    const handle = connectionHandle(info);
    bind(info.alias, "connection", handle);
    handle.__note = "created";
    return handle;
  }

  function connection(alias) {
    const info = api("GET", ["connections", String(alias)]);
    const handle = connectionHandle(info);
    bind(info.alias, "connection", handle);
    return handle;
  }

  function connections() {
    const list = api("GET", ["connections"]);
    for (const c of list) if (bound.get(c.alias) !== "connection") bind(c.alias, "connection", connectionHandle(c));
    return result("connections", list);
  }

  // ---------------------------------------------------------------- pipelines

  const PIPELINE_METHODS = ["stats", "status", "wait", "start", "stop", "delete", "info"];
  const MODE_TEXT = {
    initial_and_cdc: "initial load, then CDC",
    initial: "initial load only",
    cdc: "CDC only, from now",
  };

  class Pipeline {
    constructor(alias) {
      hidden(this, "__alias", alias);
    }
    stats() {
      return result("stats", api("GET", ["pipelines", this.__alias, "stats"]));
    }
    status() {
      return this.stats();
    }
    wait(options) {
      const timeout = options && options.timeout !== undefined ? Number(options.timeout) : 0;
      if (!(timeout >= 0)) fail("wait({timeout}) takes seconds, e.g. wait({timeout: 60})");
      const answer = JSON.parse(native.wait(this.__alias, timeout * 1000));
      if (answer.error) fail(answer.error.message, answer.error.kind);
      return result("stats", answer.ok);
    }
    start() {
      return result("state", api("POST", ["pipelines", this.__alias, "start"]));
    }
    stop() {
      return result("state", api("POST", ["pipelines", this.__alias, "stop"]));
    }
    delete(options) {
      return deleteObject("pipeline", this.__alias, options);
    }
    info() {
      return result("pipeline", api("GET", ["pipelines", this.__alias]));
    }
    toString() {
      return this.__alias;
    }
    __display() {
      if (this.__note) {
        const note = this.__note;
        this.__note = undefined;
        return note;
      }
      return `pipeline ${this.__alias} (stats(), wait(), stop(), start(), delete())`;
    }
    __json() {
      return api("GET", ["pipelines", this.__alias]);
    }
    __completions() {
      return PIPELINE_METHODS.map((m) => m + "(");
    }
  }

  /** A handle whose unknown members are errors that name the nearest member. */
  function strict(target, what, methods) {
    const handle = new Proxy(target, {
      get(t, p, receiver) {
        if (typeof p === "symbol" || p in t || p.startsWith("__")) return Reflect.get(t, p, receiver);
        if (PROXY_IGNORED.has(p)) return undefined;
        fail(`${what(t)} has no '${p}'${hint(p, methods, true)}; it offers ${
          methods.map((m) => m + "()").join(", ")}`);
      },
    });
    handles.add(handle);
    return handle;
  }

  const pipelineHandle = (alias) => strict(new Pipeline(alias), (t) => `pipeline ${t.__alias}`, PIPELINE_METHODS);

  function pipeline(alias) {
    const info = api("GET", ["pipelines", String(alias)]);
    const handle = pipelineHandle(info.alias);
    bind(info.alias, "pipeline", handle);
    return handle;
  }

  function pipelines() {
    const list = api("GET", ["pipelines"]);
    for (const p of list) if (bound.get(p.alias) !== "pipeline") bind(p.alias, "pipeline", pipelineHandle(p.alias));
    return result("pipelines", list);
  }

  const BUILDER_METHODS = ["readFrom", "writeTo", "initialOnly", "cdcOnly", "initialAndCdc", "mode", "ddl", "start",
    "create"];
  const MODES = { initial_and_cdc: "initial_and_cdc", "initial+cdc": "initial_and_cdc", initial: "initial",
    cdc: "cdc" };
  const DDL_POLICIES = ["apply", "ignore", "stop"];

  function tableSpec(t, call) {
    if (t instanceof TableRef) return { connection: t.connection, table: t.table };
    if (typeof t === "string" && t.indexOf(".") > 0) {
      const i = t.indexOf(".");
      return { connection: t.slice(0, i), table: t.slice(i + 1) };
    }
    fail(`${call} takes a table such as mysql_crm_db.Customer (a connection alias, a dot, a table name)`);
  }

  function cdcStart(from) {
    if (from === undefined || from === null || from === "now") return;
    if (from instanceof Date || typeof from === "number" ||
      (typeof from === "string" && /^\d{4}-\d{2}-\d{2}/.test(from))) {
      notYet("CDC from a point in time is not supported by this server yet (its pipeline API takes no start " +
        "time); use .cdcOnly() to capture changes from now on, or leave the mode out for an initial load " +
        "followed by CDC");
    }
    notYet("CDC from a log position is not supported by this server yet (its pipeline API takes no start " +
      "position); use .cdcOnly() to capture changes from now on, or leave the mode out for an initial load " +
      "followed by CDC");
  }

  class PipelineBuilder {
    constructor(alias) {
      hidden(this, "__spec", { alias, mode: "initial_and_cdc", ddl_policy: "apply", auto_create: false });
    }
    readFrom(table, options) {
      this.__spec.source = tableSpec(table, "readFrom()");
      this.__options(options, "readFrom");
      return this.__self;
    }
    writeTo(table, options) {
      this.__spec.target = tableSpec(table, "writeTo()");
      this.__options(options, "writeTo");
      return this.__self;
    }
    initialOnly() {
      this.__spec.mode = "initial";
      return this.__self;
    }
    cdcOnly(options) {
      if (options !== undefined && (options === null || typeof options !== "object")) {
        fail('cdcOnly() takes no argument (changes from now on) or {from: ...}');
      }
      for (const key of Object.keys(options || {})) {
        if (key !== "from") fail(`cdcOnly() does not know the option '${key}'; it takes {from: ...}`);
      }
      cdcStart(options && options.from);
      this.__spec.mode = "cdc";
      return this.__self;
    }
    initialAndCdc() {
      this.__spec.mode = "initial_and_cdc";
      return this.__self;
    }
    mode(name) {
      const mode = MODES[String(name)];
      if (!mode) {
        fail(`unknown sync mode '${name}'${hint(String(name), Object.keys(MODES))}; use initial_and_cdc ` +
          `(the default), initial or cdc`);
      }
      this.__spec.mode = mode;
      return this.__self;
    }
    ddl(policy) {
      if (!DDL_POLICIES.includes(String(policy))) {
        fail(`unknown schema-change policy '${policy}'${hint(String(policy), DDL_POLICIES)}; use apply ` +
          `(the default), ignore or stop`);
      }
      this.__spec.ddl_policy = String(policy);
      return this.__self;
    }
    start() {
      return this.__create(true);
    }
    create() {
      return this.__create(false);
    }
    toString() {
      return `pipeline builder ${this.__spec.alias}`;
    }
    __options(options, call) {
      if (options === undefined) return;
      if (options === null || typeof options !== "object") fail(`the options of ${call}() must be an object`);
      for (const key of Object.keys(options)) {
        const value = options[key];
        if (["AutoCreate", "autoCreate", "auto_create"].includes(key)) this.__spec.auto_create = Boolean(value);
        else if (key === "mode") this.mode(value);
        else if (key === "ddl" || key === "ddl_policy") this.ddl(value);
        else if (key === "cdcFrom" || key === "from") cdcStart(value);
        else {
          fail(`${call}() does not know the option '${key}'${hint(key, ["AutoCreate", "mode", "ddl", "cdcFrom"])
          }; options: AutoCreate, mode, ddl, cdcFrom`);
        }
      }
    }
    __create(start) {
      const spec = this.__spec;
      if (!spec.source) fail(`pipeline ${spec.alias} has no source yet: add .readFrom(connection.Table)`);
      if (!spec.target) fail(`pipeline ${spec.alias} has no target yet: add .writeTo(connection.Table)`);
      const info = api("POST", ["pipelines"], Object.assign({}, spec, { start }));
      const handle = pipelineHandle(info.alias);
      bind(info.alias, "pipeline", handle);
      const from = `${spec.source.connection}.${spec.source.table}`;
      const to = `${spec.target.connection}.${spec.target.table}`;
      handle.__note = `${start ? "started" : "created"} pipeline ${info.alias}: ${from} -> ${to} (${
        MODE_TEXT[spec.mode]}${spec.auto_create ? ", AutoCreate" : ""}); ${info.alias}.stats() shows its figures`;
      return handle;
    }
    __display() {
      const s = this.__spec;
      const missing = !s.source ? ".readFrom(connection.Table)" : !s.target ? ".writeTo(connection.Table)" :
        ".start()";
      return `pipeline ${s.alias} (not created yet): continue with ${missing}`;
    }
    __json() {
      return this.__spec;
    }
    __completions() {
      return BUILDER_METHODS.map((m) => m + "(");
    }
  }

  /** The brief's `create_pipeline({alias}).readFrom(...).writeTo(..., {AutoCreate: true}).start()`. */
  function create_pipeline(options) {
    if (typeof options === "string") options = { alias: options };
    if (options === null || typeof options !== "object" || !options.alias) {
      fail('create_pipeline takes {alias: "name"}, e.g. create_pipeline({alias: "my_pipeline"})');
    }
    const builder = new PipelineBuilder(String(options.alias));
    const handle = strict(builder, (t) => `pipeline builder ${t.__spec.alias}`, BUILDER_METHODS);
    hidden(builder, "__self", handle);
    const rest = Object.assign({}, options);
    delete rest.alias;
    builder.__options(rest, "create_pipeline");
    return handle;
  }

  function deleteObject(kind, alias, options) {
    const yes = options === true || (options && (options.yes === true || options.force === true));
    const question = kind === "pipeline"
      ? `Delete pipeline ${alias} and its checkpoint? The target table stays.`
      : `Delete connection ${alias}?`;
    const answer = yes ? 1 : native.confirm(question);
    if (answer < 0) {
      fail(`deleting ${kind} ${alias} needs a confirmation that a script cannot give: write 'delete ${alias} --yes'` +
        ` or ${alias}.delete({yes: true})`);
    }
    if (answer === 0) return message(`kept ${kind} ${alias}`);
    api("DELETE", [kind === "pipeline" ? "pipelines" : "connections", alias]);
    unbind(alias);
    return message(kind === "pipeline"
      ? `deleted pipeline ${alias} and its checkpoint; the target table stays`
      : `deleted connection ${alias}`);
  }

  // ---------------------------------------------------------------- Scenario B (not on this server yet)

  function createModel() {
    notYet(MODEL_MESSAGE);
  }
  function createREST() {
    notYet(REST_MESSAGE);
  }

  // ---------------------------------------------------------------- catalogue commands

  let current = null;

  function knownConnection(alias) {
    if (bound.get(alias) === "connection") return true;
    try {
      connection(alias);
      return true;
    } catch (e) {
      return false;
    }
  }

  /** `conn.table`, `conn.db.table`, or a table of the connection chosen with `use`. */
  function resolveTable(name) {
    const dot = name.indexOf(".");
    if (dot > 0 && bound.get(name.slice(0, dot)) === "connection") {
      return [name.slice(0, dot), name.slice(dot + 1)];
    }
    if (current) return [current, name];
    if (dot > 0 && knownConnection(name.slice(0, dot))) return [name.slice(0, dot), name.slice(dot + 1)];
    fail(`no connection is in use: run 'use <connection>' first (show connections lists them), or name the table ` +
      `as <connection>.${name}`);
  }

  function pipelineOrConnection(name, allowConnection) {
    const kind = bound.get(name);
    if (kind === "pipeline" || (kind === "connection" && allowConnection)) return kind;
    try {
      pipeline(name);
      return "pipeline";
    } catch (e) {
      if (e.kind !== "not_found") throw e;
    }
    if (allowConnection) {
      try {
        connection(name);
        return "connection";
      } catch (e) {
        if (e.kind !== "not_found") throw e;
      }
    }
    const names = [...bound.keys()].filter((a) => allowConnection || bound.get(a) === "pipeline");
    fail(`no pipeline${allowConnection ? " or connection" : ""} is called '${name}'${hint(name, names)
    }; show pipelines lists them`, "not_found");
  }

  const handleOf = (alias) => (bound.get(alias) === "pipeline" ? pipelineHandle(alias) : connection(alias));

  const cmd = {
    showConnections: () => connections(),
    showPipelines: () => pipelines(),
    showTables() {
      if (!current) fail("no connection is in use: run 'use <connection>' first (show connections lists them)");
      return connection(current).tables();
    },
    use(alias) {
      if (bound.get(alias) === "pipeline") fail(`${alias} is a pipeline; 'use' takes a connection`);
      let handle;
      try {
        handle = connection(alias);
      } catch (e) {
        if (e.kind !== "not_found") throw e;
        const names = [...bound.keys()].filter((a) => bound.get(a) === "connection");
        fail(`no connection is called '${alias}'${hint(alias, names)}; show connections lists them`,
          "not_found");
      }
      current = alias;
      if (bound.get("db") === undefined) hidden(G, "db", handle);
      return message(`using connection ${describeConnection(connectionInfo.get(alias))}; show tables lists its tables`);
    },
    desc(name) {
      const [alias, table] = resolveTable(name);
      return describeTable(alias, table);
    },
    peek(name, n, columns) {
      const [alias, table] = resolveTable(name);
      return peekRows(alias, table, n, columns && columns.length ? columns : undefined);
    },
    count(name) {
      const [alias, table] = resolveTable(name);
      return countRows(alias, table);
    },
    status(name) {
      return pipelineOrConnection(name, true) === "pipeline" ? pipelineHandle(name).stats() : connection(name).test();
    },
    start(name) {
      pipelineOrConnection(name, false);
      return pipelineHandle(name).start();
    },
    stop(name) {
      pipelineOrConnection(name, false);
      return pipelineHandle(name).stop();
    },
    delete(name, yes) {
      const kind = pipelineOrConnection(name, true);
      return deleteObject(kind, name, { yes });
    },
    current: () => current,
  };

  // ---------------------------------------------------------------- help

  const HELP = {
    "": `iDaaS shell: JavaScript plus a few commands, talking to the server's Open API.

Connections
  createConnection({alias: "mysql_crm_db", ip: "db.example", port: 3306, user: "demo", password: "...", db: "crm"})
      registers a database; the server finds out what it speaks (add type: "mysql" or "postgres" to say it).
      Add {DaaSDB: true} as a second argument for the DaaS store. The alias becomes a global, in every session.
  mysql_crm_db.Customer          a table; .desc(), .peek(5), .count() look inside
  mysql_crm_db.tables()  .test()  .info()  .delete()

Pipelines
  create_pipeline({alias: "my_pipeline"})
      .readFrom(mysql_crm_db.Customer)
      .writeTo(mysql_analytical_db.CRM_Customer, {AutoCreate: true})
      .start();                  initial load of the whole table, then change data capture (CDC)
  Sync modes, before .start():   .initialOnly()  initial load, then the pipeline completes
                                 .cdcOnly()      changes from now on, no initial load
                                 .initialAndCdc() the default; or {mode: "initial" | "cdc" | "initial_and_cdc"}
                                 .ddl("apply" | "ignore" | "stop") what a source schema change does
  my_pipeline.stats()            Status, Input/Output Total, Throughput, Last Input/Output, Lag
  my_pipeline.wait()             a progress bar until the initial load is done ({timeout: seconds})
  my_pipeline.stop()  .start()  .info()  .delete()

Commands (not JavaScript; type them on a line of their own)
  show dbs | show connections    the connections         use <connection>   pick one for the commands below
  show tables                    its tables              desc <table>       columns, types, key
  peek <table> [n] [columns]     the first n rows        count <table>      exact row count
  show pipelines                 the pipelines           status <pipeline>  its stats (a connection: its check)
  start <p>  stop <p>            run or pause            delete <p> [--yes] remove (asks first)
  help [connections | pipelines | commands | scripts | iModels]        exit (or Ctrl-D) leaves

Also: print(x), console.log(x), sleep(ms), connection("alias"), pipeline("alias"). A line that starts with "."
continues the previous result. Tab completes functions, aliases, tables and columns.`,
    connections: `createConnection({alias, ip | host, port, user, password, db | database, type}, {DaaSDB: true})
  type is "mysql" (MySQL or MariaDB) or "postgres"; without it the server finds out by talking to the database.
  The password is sent to the server, stored encrypted, never shown, and replaced by *** in the shell history.
Examples
  createConnection({alias: "crm", ip: "10.0.0.5", port: 3306, user: "demo", password: "...", db: "crm"})
  crm.tables()          crm.Customer.desc()          crm.Customer.peek(5, ["id", "name"])
  crm.crm2.Orders       a table of another database on the same server
  crm.test()            login, privileges and CDC settings, each with its fix`,
    pipelines: `create_pipeline({alias}).readFrom(conn.Table).writeTo(conn.Table, {AutoCreate: true}).start()
  .initialOnly()       initial load only; the pipeline completes afterwards
  .cdcOnly()           changes from now on; CDC from a point in time or a log position is not available yet
  .initialAndCdc()     initial load, then CDC (the default)
  options: {AutoCreate: true, mode: "initial" | "cdc" | "initial_and_cdc", ddl: "apply" | "ignore" | "stop"}
  .create() instead of .start() creates it without starting.
Examples
  my_pipeline.stats()     my_pipeline.wait({timeout: 600})     my_pipeline.stop()     my_pipeline.delete()`,
    commands: `show dbs | show connections | show tables | show pipelines
use <connection>          desc <table>          peek <table> [n] [columns...]          count <table>
status <pipeline>         start <pipeline>      stop <pipeline>       delete <pipeline> [--yes]
A table is <table> of the connection in use, or <connection>.<table>, or <connection>.<database>.<table>.`,
    scripts: `idaas shell -f script.js       run a file: each statement as if typed at the prompt, stops at the first error
idaas shell --eval "..."       the same for a string; --json prints results as JSON
Results of the shell's functions (stats, listings, ...) are printed; use print(x) for anything else.
'delete' in a script needs --yes (or .delete({yes: true})): there is nobody to answer the question.`,
    imodels: `createModel(...), .startSync(), createREST(...).publish() and daas_db.X.status() are Scenario B calls:
iModels and Data APIs are not available on this server yet, and these calls say so.`,
  };

  function help(topic) {
    const key = topic === undefined ? "" : String(topic).toLowerCase().replace(/^imodel$/, "imodels");
    if (!(key in HELP)) {
      fail(`no help on '${topic}'${hint(String(topic), Object.keys(HELP).filter(Boolean))}; topics: ` +
        Object.keys(HELP).filter(Boolean).join(", "));
    }
    return message(HELP[key]);
  }

  // ---------------------------------------------------------------- explanations of errors

  const SHELL_FUNCTIONS = ["createConnection", "create_pipeline", "createPipeline", "createModel", "createREST",
    "print", "console", "help", "sleep", "connection", "pipeline", "connections", "pipelines"];

  function globalNames() {
    return Object.getOwnPropertyNames(G).filter((n) => !n.startsWith("__")).concat([...bound.keys()]);
  }

  /** The sentence printed for an error thrown by user code: never a stack. */
  function explain(e, source) {
    if (!(e instanceof Error)) return `uncaught exception: ${inspect(e)}`;
    if (e instanceof ShellError) return e.message;
    const text = String(source || "");
    if (e.name === "ReferenceError") {
      const m = /^'?([\w$]+)'? is not defined/.exec(e.message);
      if (m) {
        const name = m[1];
        if (/\bcreateModel\s*\(/.test(text) || /\.startSync\s*\(/.test(text)) return MODEL_MESSAGE;
        if (/\bcreateREST\s*\(/.test(text) || /\.publish\s*\(/.test(text)) return REST_MESSAGE;
        const status = new RegExp(`\\b${name}\\.([\\w$]+)\\.status\\s*\\(`).exec(text);
        if (status) return MODEL_STATUS_MESSAGE(`${name}.${status[1]}`);
        const near = nearest(name, globalNames());
        if (near) return `${name} is not defined; did you mean ${near}?`;
        return `${name} is not defined: no connection, pipeline or shell function has this name (show connections ` +
          `and show pipelines list the aliases, help lists the functions)`;
      }
    }
    if (e.name === "SyntaxError") {
      const at = /\binput:(\d+):\d+/.exec(e.stack || "");
      const line = at && text.includes("\n") ? ` (line ${at[1]} of the statement)` : "";
      return `syntax error${line}: ${e.message}; check the quotes, commas and brackets`;
    }
    if (e.name === "TypeError") {
      const m = /^([\w$.]+) is not a function/.exec(e.message) || /^not a function/.exec(e.message);
      if (m && m[1]) {
        const parts = m[1].split(".");
        const last = parts.pop();
        let owner = G;
        for (const p of parts) owner = owner == null ? owner : owner[p];
        const names = isHandle(owner) ? owner.__completions().map((c) => c.replace(/\($/, "")) :
          owner === G ? globalNames() : owner != null ? Object.getOwnPropertyNames(Object.getPrototypeOf(owner) || {}) : [];
        return `${m[1]} is not a function${didYouMean(last, names, true)}`;
      }
    }
    if (e.name === "InternalError" && /interrupted/.test(e.message)) return "interrupted";
    if (/out of memory/.test(e.message)) {
      return "the script ran out of memory (the shell allows 256 MiB); work on less data at a time";
    }
    if (e.name === "RangeError" && /stack/.test(e.message)) {
      return "too much recursion: the script's call stack overflowed";
    }
    return `${e.name}: ${e.message}`;
  }

  const errorKind = (e) => (e instanceof ShellError ? e.kind : "invalid_input");

  // ---------------------------------------------------------------- completion

  const COMMANDS = ["show", "use", "desc", "describe", "peek", "count", "status", "start", "stop", "delete", "help",
    "exit", "quit"];
  const SHOW_WHAT = ["dbs", "connections", "tables", "pipelines"];
  const connectionsBound = () => [...bound.keys()].filter((a) => bound.get(a) === "connection");
  const pipelinesBound = () => [...bound.keys()].filter((a) => bound.get(a) === "pipeline");

  function tableCandidates() {
    const out = [];
    if (current) out.push(...tablesOf(current));
    for (const c of connectionsBound()) out.push(c + ".");
    return out;
  }

  function qualifiedTables(word) {
    const dot = word.indexOf(".");
    if (dot > 0 && bound.get(word.slice(0, dot)) === "connection") {
      const alias = word.slice(0, dot);
      return tablesOf(alias).map((t) => `${alias}.${t}`);
    }
    return tableCandidates();
  }

  function tableOfWord(word) {
    const dot = word.indexOf(".");
    if (dot > 0 && bound.get(word.slice(0, dot)) === "connection") return [word.slice(0, dot), word.slice(dot + 1)];
    return current ? [current, word] : null;
  }

  /** Completion of the text before the cursor: `{start, items}`. */
  function complete(line) {
    const words = /^\s*([a-z]+)\s+(.*)$/.exec(line);
    if (words && COMMANDS.includes(words[1]) && !/[(){}\[\]=;"'`+]/.test(words[2])) {
      const args = words[2].trim() === "" ? [] : words[2].trim().split(/\s+/);
      const typing = /\s$/.test(line) ? "" : args.pop() || "";
      const start = line.length - typing.length;
      let items = [];
      switch (words[1]) {
        case "show": items = args.length === 0 ? SHOW_WHAT : []; break;
        case "use": items = args.length === 0 ? connectionsBound() : []; break;
        case "desc": case "describe": case "count": items = args.length === 0 ? qualifiedTables(typing) : []; break;
        case "peek":
          if (args.length === 0) items = qualifiedTables(typing);
          else {
            const t = tableOfWord(args[0]);
            items = t ? columnsOf(t[0], t[1]) : [];
          }
          break;
        case "status": case "delete": items = args.length === 0 ? pipelinesBound().concat(connectionsBound()) : []; break;
        case "start": case "stop": items = args.length === 0 ? pipelinesBound() : []; break;
        case "help": items = args.length === 0 ? Object.keys(HELP).filter(Boolean) : []; break;
      }
      return { start, items: items.filter((i) => i.startsWith(typing)) };
    }
    // A column name inside a string, after a table: conn.Table.peek(5, ["na|
    const column = /([A-Za-z_$][\w$]*)\.([A-Za-z_$][\w$]*)\.[\w$]+\([^"'`]*(?:["'][^"']*["'][^"'`]*)*["']([\w$]*)$/
      .exec(line);
    if (column && bound.get(column[1]) === "connection") {
      return {
        start: line.length - column[3].length,
        items: columnsOf(column[1], column[2]).filter((c) => c.startsWith(column[3])),
      };
    }
    const m = /((?:[A-Za-z_$][\w$]*\.)*)([A-Za-z_$][\w$]*)?$/.exec(line);
    const path = m[1] ? m[1].slice(0, -1).split(".") : [];
    const typing = m[2] || "";
    const start = line.length - typing.length;
    if (path.length === 0) {
      const atStart = line.slice(0, start).trim() === "";
      let names = typing === "" ? SHELL_FUNCTIONS.concat([...bound.keys()]) : globalNames();
      if (atStart) names = names.concat(COMMANDS);
      return { start, items: [...new Set(names)].filter((n) => n.startsWith(typing)).sort() };
    }
    let obj = G;
    for (const p of path) {
      if (obj === null || obj === undefined) return { start, items: [] };
      obj = obj[p];
    }
    if (obj === null || obj === undefined) return { start, items: [] };
    let names;
    if (isHandle(obj)) names = obj.__completions();
    else {
      names = [];
      for (let o = obj; o && o !== Object.prototype && o !== Function.prototype; o = Object.getPrototypeOf(o)) {
        for (const n of Object.getOwnPropertyNames(o)) {
          if (n === "constructor" || n.startsWith("__")) continue;
          let isFn = false;
          try {
            isFn = typeof obj[n] === "function";
          } catch (e) { /* a getter that throws */ }
          names.push(isFn ? n + "(" : n);
        }
      }
    }
    return { start, items: [...new Set(names)].filter((n) => n.startsWith(typing)).sort() };
  }

  /** Whether `source` parses: "ok", "incomplete" (it ends too early) or "error". Compiles, never runs. */
  function parses(source) {
    try {
      new Function(source);
      return "ok";
    } catch (e) {
      if (!(e instanceof SyntaxError)) return "error";
      // The body sits between the two lines of `function anonymous(\n) {\n` and `\n}`: an error on that
      // closing line means the text stopped too early.
      const at = /<input>:(\d+):\d+/.exec(e.stack || "");
      return at && Number(at[1]) > source.split("\n").length + 2 ? "incomplete" : "error";
    }
  }

  function load() {
    const cs = api("GET", ["connections"]);
    for (const c of cs) bind(c.alias, "connection", connectionHandle(c));
    for (const p of api("GET", ["pipelines"])) bind(p.alias, "pipeline", pipelineHandle(p.alias));
    return cs.length;
  }

  function takeNotes() {
    return notes.splice(0, notes.length);
  }

  // ---------------------------------------------------------------- globals

  const consoleObject = {
    log: print,
    info: print,
    warn: (...args) => native.writeErr(args.map((a) => (typeof a === "string" ? a : render(a))).join(" ") + "\n"),
    error: (...args) => native.writeErr(args.map((a) => (typeof a === "string" ? a : render(a))).join(" ") + "\n"),
  };
  function sleep(ms) {
    if (!native.sleep(Number(ms) || 0)) fail("interrupted");
  }

  const globals = {
    createConnection, create_pipeline, createPipeline: create_pipeline, createModel, createREST, print,
    console: consoleObject, help, sleep, connection, pipeline, connections, pipelines,
  };
  for (const name of Object.keys(globals)) {
    Object.defineProperty(G, name, { value: globals[name], writable: true, configurable: true, enumerable: false });
  }
  hidden(G, "__shell", {
    cmd, show, render, explain, errorKind, complete, parses, load, takeNotes, help,
    current: () => current,
  });
});
