//! The shell against a scripted Open API: what each brief line sends, prints and explains. The end-to-end
//! tests against a real server and databases are in `tests/shell.rs`.

use super::api::Api;
use super::js::{Io, Js, Outcome};
use super::style::Style;
use super::{Flow, Session};
use crate::client::ClientError;
use idaas_core::ErrorKind;
use idaas_server::{ErrorBody, ErrorDetail};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;

#[derive(Clone, Default)]
struct Buf(Rc<RefCell<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.borrow_mut())).unwrap()
    }
}

/// A server that knows connections and pipelines created through it and records every request.
#[derive(Default)]
struct FakeApi {
    log: RefCell<Vec<(String, String, Option<Value>)>>,
    connections: RefCell<Vec<Value>>,
    pipelines: RefCell<Vec<Value>>,
}

fn api_error(status: u16, kind: ErrorKind, message: &str) -> ClientError {
    let detail = ErrorDetail { kind, message: message.to_owned() };
    let body = serde_json::to_string(&ErrorBody { error: detail.clone() }).unwrap();
    ClientError::Api { status, detail: Some(detail), message: message.to_owned(), body }
}

const CUSTOMER_SCHEMA: &str = r#"{"table":{"namespace":"crm","name":"Customer"},"columns":[
    {"name":"id","data_type":{"kind":"int","bytes":8,"unsigned":true},"source_type":"bigint unsigned","nullable":false,"default":null},
    {"name":"name","data_type":{"kind":"varchar","length":64,"charset":"utf8"},"source_type":"varchar(64)","nullable":false,"default":null}],
    "primary_key":["id"],"version":1}"#;

fn stats(alias: &str) -> Value {
    json!({"alias": alias, "status": "running", "input_total": 2400, "output_total": 2300, "throughput_eps": 500.0,
        "last_input": "2022-02-01T15:00:03.203Z", "last_output": "2022-02-01T15:00:03.829Z", "lag_ms": 12,
        "snapshot_rows": 2000, "cdc_events": 400,
        "snapshot": [{"table": {"namespace": "crm", "name": "Customer"}, "rows_copied": 2000, "rows_estimated": 2000, "done": true}],
        "checkpoint": null, "last_error": null})
}

impl Api for FakeApi {
    fn call(
        &self,
        method: &str,
        segments: &[String],
        body: Option<&Value>,
        query: &[(String, String)],
    ) -> Result<String, ClientError> {
        let mut path = segments.join("/");
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"));
        }
        self.log.borrow_mut().push((method.to_owned(), path.clone(), body.cloned()));
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        let find = |list: &RefCell<Vec<Value>>, alias: &str| {
            list.borrow().iter().find(|c| c["alias"] == alias).cloned()
        };
        let missing = |what: &str, alias: &str| {
            api_error(404, ErrorKind::NotFound, &format!("{what} '{alias}' does not exist"))
        };
        Ok(match (method, s.as_slice()) {
            ("GET", ["connections"]) => Value::Array(self.connections.borrow().clone()).to_string(),
            ("GET", ["pipelines"]) => Value::Array(self.pipelines.borrow().clone()).to_string(),
            ("POST", ["connections"]) => {
                let b = body.unwrap();
                let info = json!({"alias": b["alias"], "type": b.get("type").cloned().unwrap_or(json!("mysql")),
                    "host": b["host"], "port": b.get("port").cloned().unwrap_or(json!(3306)), "user": b["user"],
                    "database": b.get("database").cloned().unwrap_or(Value::Null),
                    "daas_db": b.get("DaaSDB").cloned().unwrap_or(json!(false)), "created_at": "2022-02-01T15:00:03Z"});
                self.connections.borrow_mut().push(info.clone());
                info.to_string()
            }
            ("GET", ["connections", alias]) => {
                find(&self.connections, alias).ok_or_else(|| missing("connection", alias))?.to_string()
            }
            ("GET", ["connections", _, "tables"]) => {
                r#"[{"namespace":"crm","name":"Customer"},{"namespace":"crm","name":"Orders"}]"#.to_owned()
            }
            ("GET", ["connections", _, "tables", "Customer"]) => CUSTOMER_SCHEMA.to_owned(),
            ("GET", ["connections", _, "tables", "Customer", "count"]) => {
                r#"{"table":{"namespace":"crm","name":"Customer"},"count":2}"#.to_owned()
            }
            ("GET", ["connections", _, "tables", "Customer", "rows"]) => json!({
                "table": {"namespace": "crm", "name": "Customer"}, "columns": ["id", "name"],
                "rows": [[{"type": "uint", "value": 1}, {"type": "text", "value": "Ada"}],
                         [{"type": "uint", "value": 2}, {"type": "null"}]],
                "limit": query[0].1.parse::<u32>().unwrap()})
            .to_string(),
            ("GET", ["connections", alias, "tables", table, ..]) => {
                return Err(api_error(
                    404,
                    ErrorKind::NotFound,
                    &format!("table crm.{table} does not exist on connection '{alias}'"),
                ));
            }
            ("POST", ["pipelines"]) => {
                let b = body.unwrap();
                let info = json!({"alias": b["alias"], "spec": b, "status": if b["start"] == true { "running" } else { "created" },
                    "created_at": "2022-02-01T15:00:03Z", "last_error": null});
                self.pipelines.borrow_mut().push(info.clone());
                info.to_string()
            }
            ("GET", ["pipelines", alias]) => {
                find(&self.pipelines, alias).ok_or_else(|| missing("pipeline", alias))?.to_string()
            }
            ("GET", ["pipelines", alias, "stats"]) => {
                find(&self.pipelines, alias).ok_or_else(|| missing("pipeline", alias))?;
                stats(alias).to_string()
            }
            ("DELETE", ["pipelines", alias]) => {
                self.pipelines.borrow_mut().retain(|p| p["alias"] != *alias);
                String::new()
            }
            _ => return Err(api_error(404, ErrorKind::NotFound, &format!("no route for {method} {path}"))),
        })
    }
}

struct Harness {
    api: Rc<FakeApi>,
    session: Session,
    out: Buf,
    err: Buf,
}

fn harness(json: bool) -> Harness {
    let api = Rc::new(FakeApi::default());
    let (out, err) = (Buf::default(), Buf::default());
    let io = Rc::new(Io {
        out: RefCell::new(Box::new(out.clone())),
        err: RefCell::new(Box::new(err.clone())),
        json,
        interactive: false,
        style: Style::default(),
    });
    let interrupt: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let js = Js::new(api.clone(), io.clone(), interrupt).unwrap();
    js.load_aliases().unwrap();
    Harness { api, session: Session { js: Rc::new(js), io }, out, err }
}

impl Harness {
    fn run(&self, text: &str) -> (Flow, String, String) {
        let flow = self.session.run_text(text, true);
        (flow, self.out.take(), self.err.take())
    }

    fn requests(&self) -> Vec<(String, String, Option<Value>)> {
        std::mem::take(&mut *self.api.log.borrow_mut())
    }
}

const CREATE_CRM: &str = r#"createConnection( {
            alias: "mysql_crm_db",
            ip: 'demodb.tapdata.net',
            port: 3306,
            user: "demo",
            password: "xxxxxx",
            db: "crm"
        });"#;

const PIPELINE: &str = r#"create_pipeline({alias: "my_pipeline"})
    .readFrom( mysql_crm_db.Customer)
    .writeTo(mysql_analytical_db.CRM_Customer,  {AutoCreate:true} )
    .start();"#;

#[test]
fn the_brief_lines_send_the_brief_fields_and_print_the_stats_block() {
    let h = harness(false);
    let (flow, out, err) = h.run(super::input::tests::BRIEF_A);
    assert_eq!(flow, Flow::Continue, "{err}");
    assert_eq!(
        out,
        "created connection mysql_crm_db (mysql demodb.tapdata.net:3306, database crm)\n\
         created connection mysql_analytical_db (mysql demodb.tapdata.net:3307, database analyticaldb)\n"
    );
    assert!(err.contains("note: read the input leniently: removed the '>' prompt on line 1"), "{err}");
    assert!(err.contains("closed the quote left open on line 12"), "{err}");
    let posts: Vec<Value> =
        h.requests().into_iter().filter(|(m, _, _)| m == "POST").map(|(_, _, b)| b.unwrap()).collect();
    // No `type`: the server finds out what the database speaks.
    assert_eq!(
        posts,
        [
            json!({"alias": "mysql_crm_db", "host": "demodb.tapdata.net", "port": 3306, "user": "demo",
                "password": "xxxxxx", "database": "crm"}),
            json!({"alias": "mysql_analytical_db", "host": "demodb.tapdata.net", "port": 3307, "user": "demo",
                "password": "xxxxxx", "database": "analyticaldb"}),
        ]
    );

    let (flow, out, err) = h.run(&format!("{PIPELINE}\nmy_pipeline.stats()"));
    assert_eq!(flow, Flow::Continue, "{err}");
    assert_eq!(
        out,
        "started pipeline my_pipeline: mysql_crm_db.Customer -> mysql_analytical_db.CRM_Customer (initial load, \
         then CDC, AutoCreate); my_pipeline.stats() shows its figures\n\
         Status:       running\nInput Total:  2400\nOutput Total: 2300\nThroughput:   500 events/second\n\
         Last Input:   2022.02.01 15:00:03.203\nLast Output:  2022.02.01 15:00:03.829\nLag:          12 ms\n\
         Snapshot crm.Customer: 2000/2000 rows (done)\n"
    );
    let create = h.requests().into_iter().find(|(m, p, _)| m == "POST" && p == "pipelines").unwrap();
    assert_eq!(
        create.2.unwrap(),
        json!({"alias": "my_pipeline", "mode": "initial_and_cdc", "ddl_policy": "apply", "auto_create": true,
            "source": {"connection": "mysql_crm_db", "table": "Customer"},
            "target": {"connection": "mysql_analytical_db", "table": "CRM_Customer"}, "start": true})
    );
}

#[test]
fn aliases_are_globals_in_a_new_session_and_tables_are_any_property() {
    let h = harness(false);
    h.run(CREATE_CRM);
    h.run(
        "create_pipeline({alias: 'p'}).readFrom(mysql_crm_db.Customer).writeTo('mysql_crm_db.Copy').create()",
    );
    // A new engine on the same server loads both aliases.
    let io = h.session.io.clone();
    let js = Js::new(h.api.clone(), io, Box::leak(Box::new(AtomicBool::new(false)))).unwrap();
    js.load_aliases().unwrap();
    let again = Session { js: Rc::new(js), io: h.session.io.clone() };
    assert_eq!(again.run_text("print(String(mysql_crm_db.Any_Table_Name), String(p))", true), Flow::Continue);
    assert_eq!(h.out.take(), "mysql_crm_db.Any_Table_Name p\n");
    again.run_text("mysql_crm_db.crm2.Orders", true);
    assert_eq!(h.out.take(), "table mysql_crm_db.crm2.Orders (desc(), peek(n) and count() look inside)\n");
}

#[test]
fn sync_modes_are_sent_or_refused_with_the_reason() {
    let h = harness(false);
    h.run(CREATE_CRM);
    let base = "create_pipeline({alias: 'a'}).readFrom(mysql_crm_db.Customer).writeTo(mysql_crm_db.T)";
    for (chain, mode) in [
        (".initialOnly().create()", "initial"),
        (".cdcOnly().create()", "cdc"),
        (".cdcOnly({from: 'now'}).initialAndCdc().create()", "initial_and_cdc"),
        (".mode('cdc').create()", "cdc"),
    ] {
        h.requests();
        let (flow, _, err) = h.run(&format!("{base}{chain}; pipeline('a').delete({{yes: true}})"));
        assert_eq!(flow, Flow::Continue, "{chain}: {err}");
        let sent =
            h.requests().into_iter().find(|(m, p, _)| m == "POST" && p == "pipelines").unwrap().2.unwrap();
        assert_eq!(sent["mode"], mode, "{chain}");
    }
    let (_, _, err) = h.run(&format!("{base}.cdcOnly({{from: '2022-02-01 15:00:00'}})"));
    assert!(
        err.starts_with("error: line 1: CDC from a point in time is not supported by this server yet"),
        "{err}"
    );
    let (_, _, err) = h.run(&format!("{base}.cdcOnly({{from: {{file: 'mysql-bin.000003', pos: 4}}}})"));
    assert!(err.contains("CDC from a log position is not supported by this server yet"), "{err}");
    let (_, _, err) = h.run(&format!("{base}.mode('full')"));
    assert!(err.contains("unknown sync mode 'full'"), "{err}");
    assert!(
        !h.requests().iter().any(|(m, p, _)| m == "POST" && p == "pipelines"),
        "refused modes send nothing"
    );
}

#[test]
fn scenario_b_calls_say_what_is_missing() {
    let h = harness(false);
    let lines = [
        (
            "createModel({  db_alias: \"daas_db\",name: \"OmniCustomer\" })\n\t.readFrom( mysql_insurance_db.Customer) \n\t.startSync();",
            "iModels (createModel(...).readFrom(...).startSync()) are not available on this server yet",
        ),
        (
            "createREST({group: \"crm_api\", name: \"OmniCustomer\", method: \"GET\", path: \"/OmniCustomer\",\n allowedParameters: [\"type\", \"gender\", \"zipcode\"], model: daas_db.OmniCustomer}).publish()",
            "Data APIs (createREST(...).publish()) are not available on this server yet",
        ),
        ("daas_db.OmniCustomer.status()", "iModel status (daas_db.OmniCustomer.status()) is not available"),
    ];
    for (line, expected) in lines {
        let h2 = harness(false);
        let (flow, out, err) = h2.run(line);
        assert_eq!(flow, Flow::Failed);
        assert_eq!(out, "");
        assert!(err.starts_with(&format!("error: line 1: {expected}")), "{line}: {err}");
        assert_eq!(err.lines().count(), 1, "one sentence, no stack: {err}");
    }
    // With the connections in place, the same calls still say so.
    h.run(CREATE_CRM);
    let (_, _, err) = h.run("mysql_crm_db.Customer.status()");
    assert!(
        err.contains("iModel status (mysql_crm_db.Customer.status()) is not available on this server yet")
    );
}

#[test]
fn mistakes_get_one_sentence_and_the_nearest_name() {
    let h = harness(false);
    h.run(CREATE_CRM);
    h.run("create_pipeline({alias: 'my_pipeline'}).readFrom(mysql_crm_db.Customer).writeTo(mysql_crm_db.T).start()");
    for (line, expected) in [
        ("create_pipline({alias: 'x'})", "create_pipline is not defined; did you mean create_pipeline?"),
        ("my_pipelin.stats()", "my_pipelin is not defined; did you mean my_pipeline?"),
        ("my_pipeline.stat()", "pipeline my_pipeline has no 'stat' (did you mean stats()?)"),
        ("mysql_crm_db.tabels()", "mysql_crm_db.tabels is not a function (did you mean tables()?)"),
        (
            "createConnection({alias: 'x', ip: 'h', usr: 'u'})",
            "createConnection does not know the option 'usr' (did you mean user?)",
        ),
        ("nothing_like_this", "nothing_like_this is not defined: no connection, pipeline or shell function"),
        ("throw new Error('boom')", "Error: boom"),
        ("null.x", "TypeError: cannot read property 'x' of null"),
        ("f(", "syntax error"),
        ("mysql_crm_db.Customer.peek(5000)", "peek takes a number of rows from 1 to 1000"),
        (
            "mysql_crm_db.Customer.peek(2, ['nmae'])",
            "table crm.Customer has no column 'nmae'; did you mean name?",
        ),
        ("mysql_crm_db.Nope.count()", "table crm.Nope does not exist on connection 'mysql_crm_db'"),
        ("function f() { return f() }; f()", "too much recursion"),
    ] {
        let (flow, out, err) = h.run(line);
        assert_eq!(flow, Flow::Failed, "{line}");
        assert_eq!(out, "", "{line}");
        assert!(err.starts_with(&format!("error: line 1: {expected}")), "{line}: {err}");
        assert_eq!(err.lines().count(), 1, "{line}: {err}");
        assert!(!err.contains("at ") || line.contains("at"), "no stack: {err}");
    }
}

#[test]
fn catalogue_commands_and_their_safety() {
    let h = harness(false);
    h.run(CREATE_CRM);
    let (_, out, err) = h.run("show tables");
    assert_eq!(out, "");
    assert!(err.contains("no connection is in use: run 'use <connection>' first"), "{err}");
    let (flow, out, err) = h.run("use mysql_crm_db\nshow tables\ndesc Customer\npeek Customer 2\ncount mysql_crm_db.Customer\npeek Customer 2 name");
    assert_eq!(flow, Flow::Continue, "{err}");
    assert_eq!(
        out,
        "using connection mysql_crm_db (mysql demodb.tapdata.net:3306, database crm); show tables lists its tables\n\
         TABLE\ncrm.Customer\ncrm.Orders\n\
         Table: crm.Customer\nNAME  TYPE         SOURCE TYPE      NULLABLE  DEFAULT  KEY\n\
         id    uint64       bigint unsigned  no        -        PK\nname  varchar(64)  varchar(64)      no        -\n\
         id  name\n1   Ada\n2   NULL\n(2 rows of crm.Customer) (limit reached; peek <table> N shows more, up to 1000)\n\
         crm.Customer: 2 rows\n\
         name\nAda\nNULL\n(2 rows of crm.Customer) (limit reached; peek <table> N shows more, up to 1000)\n"
    );
    assert!(
        h.requests().iter().any(|(_, p, _)| p == "connections/mysql_crm_db/tables/Customer/rows?limit=2")
    );
    h.run("create_pipeline({alias: 'my_pipeline'}).readFrom(mysql_crm_db.Customer).writeTo(mysql_crm_db.T).start()");
    h.requests();
    // A script cannot answer the question: it is refused, nothing is deleted, nothing waits.
    let (flow, _, err) = h.run("delete my_pipeline");
    assert_eq!(flow, Flow::Failed);
    assert!(err.contains("write 'delete my_pipeline --yes'"), "{err}");
    assert!(!h.requests().iter().any(|(m, _, _)| m == "DELETE"));
    let (_, out, _) = h.run("delete my_pipeline --yes\nshow pipelines");
    assert_eq!(
        out,
        "deleted pipeline my_pipeline and its checkpoint; the target table stays\nALIAS  STATUS  SOURCE  TARGET  MODE  CREATED\n"
    );
    let (_, _, err) = h.run("my_pipeline");
    assert!(err.contains("my_pipeline is not defined"), "the deleted alias is gone: {err}");
    let (_, _, err) = h.run("status nope");
    assert!(err.contains("no pipeline or connection is called 'nope'"), "{err}");
    let (_, out, _) = h.run("help");
    assert!(
        out.contains("create_pipeline({alias: \"my_pipeline\"})") && out.contains("peek <table> [n]"),
        "{out}"
    );
}

#[test]
fn json_output_is_the_api_answer() {
    let h = harness(true);
    h.run(CREATE_CRM);
    h.run("create_pipeline({alias: 'p'}).readFrom(mysql_crm_db.Customer).writeTo(mysql_crm_db.T).start()");
    let (_, out, _) = h.run("p.stats()");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, stats("p"));
    let (_, _, err) = h.run("nope");
    let e: Value = serde_json::from_str(&err).unwrap();
    assert_eq!(e["error"]["kind"], "invalid_input");
    assert!(e["error"]["message"].as_str().unwrap().contains("nope is not defined"));
}

#[test]
fn completion_offers_functions_aliases_tables_and_columns() {
    let h = harness(false);
    h.run(CREATE_CRM);
    h.run("create_pipeline({alias: 'my_pipeline'}).readFrom(mysql_crm_db.Customer).writeTo(mysql_crm_db.T).start()");
    let js = &h.session.js;
    assert_eq!(js.complete("create_pi"), ("create_pi".into(), vec!["create_pipeline".into()]));
    assert_eq!(js.complete("mysql_c"), ("mysql_c".into(), vec!["mysql_crm_db".into()]));
    assert_eq!(js.complete("x = mysql_crm_db.Cu"), ("Cu".into(), vec!["Customer".into()]));
    assert_eq!(js.complete("my_pipeline.st").1, ["start(", "stats(", "status(", "stop("]);
    assert_eq!(js.complete("sh"), ("sh".into(), vec!["show".into()]));
    assert_eq!(js.complete("show p"), ("p".into(), vec!["pipelines".into()]));
    assert_eq!(js.complete("desc mysql_crm_db.O").1, ["mysql_crm_db.Orders"]);
    assert_eq!(js.complete("peek mysql_crm_db.Customer 5 na").1, ["name"]);
    assert_eq!(js.complete("mysql_crm_db.Customer.peek(5, [\"i"), ("i".into(), vec!["id".into()]));
    assert_eq!(js.complete("stop my_").1, ["my_pipeline"]);
}

#[test]
fn interrupts_and_memory_limits_stop_user_code() {
    let api = Rc::new(FakeApi::default());
    let io = Rc::new(Io {
        out: RefCell::new(Box::new(Buf::default())),
        err: RefCell::new(Box::new(Buf::default())),
        json: false,
        interactive: false,
        style: Style::default(),
    });
    let flag: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let js = Js::new(api, io.clone(), flag).unwrap();
    let raise = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    assert_eq!(js.run("while (true) {}", &io), Outcome::Interrupted);
    raise.join().unwrap();
    match js.run("let a = []; while (true) a.push('x'.repeat(1 << 20) + a.length);", &io) {
        Outcome::Failed { message, .. } => assert!(message.contains("ran out of memory"), "{message}"),
        other => panic!("{other:?}"),
    }
    // The engine is still usable afterwards.
    assert_eq!(js.run("a = null; 1 + 1", &io), Outcome::Done);
}
