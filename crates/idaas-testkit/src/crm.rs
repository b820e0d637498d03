//! A CRM `Customer` table with a column of every common MySQL type, and deterministic generators of rows and
//! of mixed change transactions, as SQL text. Used by tests, benchmarks and the Scenario A demo.

/// `CREATE TABLE Customer` with every type the MySQL connector must carry.
pub fn customer_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE `{table}` (
  id BIGINT NOT NULL PRIMARY KEY,
  name VARCHAR(100) CHARACTER SET utf8mb4 NOT NULL,
  gender CHAR(1) CHARACTER SET utf8mb4,
  zipcode VARCHAR(10),
  t_tiny TINYINT, t_tiny_u TINYINT UNSIGNED,
  t_small SMALLINT, t_small_u SMALLINT UNSIGNED,
  t_medium MEDIUMINT, t_medium_u MEDIUMINT UNSIGNED,
  t_int INT, t_int_u INT UNSIGNED,
  t_big BIGINT, t_big_u BIGINT UNSIGNED,
  t_dec DECIMAL(20,6), t_dec_wide DECIMAL(65,30), t_dec_u DECIMAL(10,2) UNSIGNED,
  t_float FLOAT, t_double DOUBLE,
  t_char CHAR(10), t_text TEXT, t_medtext MEDIUMTEXT,
  t_latin VARCHAR(50) CHARACTER SET latin1, t_latin_text TEXT CHARACTER SET latin1,
  t_binary BINARY(8), t_varbinary VARBINARY(32), t_blob BLOB,
  t_date DATE, t_time TIME, t_time3 TIME(3),
  t_datetime DATETIME, t_datetime6 DATETIME(6),
  t_timestamp TIMESTAMP NULL DEFAULT NULL, t_timestamp3 TIMESTAMP(3) NULL DEFAULT NULL,
  t_year YEAR,
  t_enum ENUM('gold','silver','bronze','it''s'), t_set SET('a','b','c','d'),
  t_bit BIT(12), t_bit64 BIT(64),
  t_json JSON,
  t_zero_date DATE, t_zero_datetime DATETIME
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    )
}

/// A small deterministic generator (xorshift64*), so every run writes the same data for a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p` percent.
    pub fn chance(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "''".into();
    }
    let mut s = String::from("0x");
    for b in bytes {
        s.push_str(&format!("{b:02X}"));
    }
    s
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

const NAMES: &[&str] = &[
    "Ada",
    "Grace",
    "Linus",
    "Zoë",
    "Ægir",
    "李小龙",
    "Дмитрий",
    "O'Brien",
    "José",
    "Back\\slash",
    "😀 emoji",
    "tab\there",
    "Søren",
    "محمد",
    "Ünal",
];
const LATIN: &[&str] = &["café", "naïve", "€uro", "Größe", "façade", "plain", "¿qué?", "æøå", "Œuvre ‰"];

/// The SQL values of one row (in the column order of [`customer_ddl`]), for `id`.
pub fn customer_values(id: i64, rng: &mut Rng) -> String {
    customer_values_with(id, rng, false)
}

/// Like [`customer_values`]; `portable` keeps every value inside what other databases can hold (no zero
/// dates, `TIME` within a day), for copies into PostgreSQL.
pub fn customer_values_with(id: i64, rng: &mut Rng, portable: bool) -> String {
    let name = format!("{} {}", NAMES[rng.below(NAMES.len() as u64) as usize], id);
    let extremes_i = [i64::MIN, i64::MAX, 0, -1];
    let big = if rng.chance(10) {
        extremes_i[rng.below(4) as usize]
    } else {
        rng.next_u64() as i64 >> rng.below(40)
    };
    let big_u = if rng.chance(10) { u64::MAX } else { rng.next_u64() >> rng.below(40) };
    let dec = format!(
        "{}{}.{:06}",
        if rng.chance(30) { "-" } else { "" },
        rng.below(99_999_999_999_999),
        rng.below(1_000_000)
    );
    let dec_wide = format!(
        "{}{}.{:015}{:015}",
        if rng.chance(50) { "-" } else { "" },
        rng.below(u64::MAX / 2),
        rng.below(999_999_999_999_999),
        rng.below(999_999_999_999_999)
    );
    let floats = ["1.2345678", "-3.4028234e38", "1.17549435e-38", "0", "0.1", "16777217", "-2.5"];
    let doubles = [
        "1.2345678901234567",
        "-1.7976931348623157e308",
        "2.2250738585072014e-308",
        "0.1",
        "-0",
        "3.141592653589793",
    ];
    let float = if rng.chance(30) {
        floats[rng.below(floats.len() as u64) as usize].to_string()
    } else {
        format!("{}", (rng.next_u64() % 1_000_000) as f32 / 7.0)
    };
    let double = if rng.chance(30) {
        doubles[rng.below(doubles.len() as u64) as usize].to_string()
    } else {
        format!("{:e}", (rng.next_u64() as f64) / 3.0)
    };
    let bin: Vec<u8> = (0..rng.below(9)).map(|_| rng.next_u64() as u8).collect();
    let varbin: Vec<u8> = (0..rng.below(33)).map(|_| rng.next_u64() as u8).collect();
    let blob: Vec<u8> = (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect();
    let text: String = (0..rng.below(40))
        .map(|i| NAMES[(i + id as u64) as usize % NAMES.len()])
        .collect::<Vec<_>>()
        .join(" ");
    let medtext = "lorem ipsum ".repeat(rng.below(200) as usize);
    let latin = LATIN[rng.below(LATIN.len() as u64) as usize];
    let y = 1000 + rng.below(9000);
    let date = format!("{y:04}-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28));
    let neg = if !portable && rng.chance(20) { "-" } else { "" };
    let max_hours = if portable { 24 } else { 839 };
    let time = format!("{neg}{}:{:02}:{:02}", rng.below(max_hours), rng.below(60), rng.below(60));
    let time3 = format!(
        "{neg}{}:{:02}:{:02}.{:03}",
        rng.below(max_hours),
        rng.below(60),
        rng.below(60),
        rng.below(1000)
    );
    let dt = format!("{} {:02}:{:02}:{:02}", date, rng.below(24), rng.below(60), rng.below(60));
    let dt6 = format!("{}.{:06}", dt, rng.below(1_000_000));
    let ts_secs = 1 + rng.below(2_147_483_646);
    let ts = format!("FROM_UNIXTIME({ts_secs})");
    let ts3 = format!("FROM_UNIXTIME({ts_secs}.{:03})", rng.below(1000));
    let year = if rng.chance(5) { 0 } else { 1901 + rng.below(255) };
    let enums = ["gold", "silver", "bronze", "it's"];
    let e = enums[rng.below(4) as usize];
    let set: Vec<&str> = ["a", "b", "c", "d"].into_iter().filter(|_| rng.chance(50)).collect();
    let bit = rng.below(4096);
    let bit64 = if rng.chance(10) { u64::MAX } else { rng.next_u64() };
    let json = format!(
        "{{\"id\": {id}, \"tags\": [\"x\", \"ü\", {}], \"nested\": {{\"ok\": {}, \"n\": null, \"f\": 1.5}}}}",
        rng.below(100),
        rng.chance(50)
    );
    let zero_date = if !portable && rng.chance(30) { "'0000-00-00'".to_string() } else { lit(&date) };
    let zero_dt = if !portable && rng.chance(30) { "'0000-00-00 00:00:00'".to_string() } else { lit(&dt) };
    let gender = if rng.chance(50) { "M" } else { "F" };
    let vals = [
        id.to_string(),
        lit(&name),
        lit(gender),
        lit(&format!("{:05}", rng.below(100_000))),
        (rng.below(256) as i64 - 128).to_string(),
        rng.below(256).to_string(),
        (rng.below(65_536) as i64 - 32_768).to_string(),
        rng.below(65_536).to_string(),
        (rng.below(16_777_216) as i64 - 8_388_608).to_string(),
        rng.below(16_777_216).to_string(),
        (rng.below(4_294_967_296) as i64 - 2_147_483_648).to_string(),
        rng.below(4_294_967_296).to_string(),
        big.to_string(),
        big_u.to_string(),
        dec,
        dec_wide,
        format!("{}.{:02}", rng.below(99_999_999), rng.below(100)),
        float,
        double,
        lit(&name.chars().take(10).collect::<String>()),
        lit(&text),
        lit(&medtext),
        lit(latin),
        lit(&latin.repeat(3)),
        hex(&bin),
        hex(&varbin),
        hex(&blob),
        lit(&date),
        lit(&time),
        lit(&time3),
        lit(&dt),
        lit(&dt6),
        ts,
        ts3,
        year.to_string(),
        lit(e),
        lit(&set.join(",")),
        bit.to_string(),
        bit64.to_string(),
        lit(&json),
        zero_date,
        zero_dt,
    ];
    let vals: Vec<String> = vals
        .into_iter()
        .enumerate()
        .map(|(i, v)| if i >= 3 && rng.chance(8) { "NULL".to_string() } else { v })
        .collect();
    format!("({})", vals.join(", "))
}

/// Multi-row `INSERT` statements for ids `first..first + count`, `per_statement` rows each.
pub fn customer_inserts(table: &str, first: i64, count: i64, per_statement: usize, seed: u64) -> Vec<String> {
    customer_inserts_with(table, first, count, per_statement, seed, false)
}

/// Like [`customer_inserts`], with [`customer_values_with`]'s `portable`.
pub fn customer_inserts_with(
    table: &str,
    first: i64,
    count: i64,
    per_statement: usize,
    seed: u64,
    portable: bool,
) -> Vec<String> {
    let mut rng = Rng::new(seed ^ first as u64);
    let mut out = Vec::new();
    let mut batch = Vec::new();
    for id in first..first + count {
        batch.push(customer_values_with(id, &mut rng, portable));
        if batch.len() >= per_statement {
            out.push(format!("INSERT INTO `{table}` VALUES {}", batch.join(",\n")));
            batch.clear();
        }
    }
    if !batch.is_empty() {
        out.push(format!("INSERT INTO `{table}` VALUES {}", batch.join(",\n")));
    }
    out
}

/// Transactions of mixed changes: inserts of new ids from `next_id`, updates of several columns (including
/// to NULL and of the key), deletes, and multi-row statements; 1 to 8 statements per transaction.
/// Returns the transactions (each a list of statements) and the next free id.
pub fn customer_changes(
    table: &str,
    max_id: i64,
    next_id: i64,
    ops: usize,
    seed: u64,
) -> (Vec<Vec<String>>, i64) {
    customer_changes_with(table, max_id, next_id, ops, seed, false)
}

/// Like [`customer_changes`], with [`customer_values_with`]'s `portable`.
pub fn customer_changes_with(
    table: &str,
    max_id: i64,
    mut next_id: i64,
    ops: usize,
    seed: u64,
    portable: bool,
) -> (Vec<Vec<String>>, i64) {
    let mut rng = Rng::new(seed);
    let mut txns = Vec::new();
    let mut done = 0;
    while done < ops {
        let n = 1 + rng.below(8) as usize;
        let mut stmts = Vec::new();
        for _ in 0..n {
            let pick = rng.below(100);
            let id = 1 + rng.below(next_id as u64 - 1) as i64;
            let stmt = match pick {
                0..=29 => {
                    let rows = 1 + rng.below(3) as i64;
                    let values: Vec<String> =
                        (0..rows).map(|i| customer_values_with(next_id + i, &mut rng, portable)).collect();
                    next_id += rows;
                    format!("INSERT INTO `{table}` VALUES {}", values.join(", "))
                }
                30..=64 => {
                    let fresh = customer_values_with(id, &mut rng, portable);
                    let _ = fresh;
                    format!(
                        "UPDATE `{table}` SET name = CONCAT('upd ', id, ' ', {}), t_int = {}, t_dec = {}, \
                         t_json = JSON_OBJECT('v', {}), t_datetime6 = NOW(6), t_blob = {}, t_latin = 'été €' \
                         WHERE id = {id}",
                        rng.below(1000),
                        rng.below(1_000_000) as i64 - 500_000,
                        format_args!("{}.{:06}", rng.below(1_000_000), rng.below(1_000_000)),
                        rng.below(1000),
                        hex(&(0..rng.below(20)).map(|_| rng.next_u64() as u8).collect::<Vec<_>>())
                    )
                }
                65..=74 => format!(
                    "UPDATE `{table}` SET t_text = NULL, t_float = NULL, t_set = 'a,d', t_enum = 'silver' \
                     WHERE id BETWEEN {id} AND {}",
                    id + rng.below(5) as i64
                ),
                75..=79 => {
                    // Move a row to a new key.
                    let new_id = next_id;
                    next_id += 1;
                    format!("UPDATE `{table}` SET id = {new_id} WHERE id = {id}")
                }
                80..=94 => format!("DELETE FROM `{table}` WHERE id = {id}"),
                _ => format!("DELETE FROM `{table}` WHERE id BETWEEN {id} AND {}", id + rng.below(3) as i64),
            };
            stmts.push(stmt);
            done += 1;
        }
        txns.push(stmts);
    }
    let _ = max_id;
    (txns, next_id)
}

/// One SQL script running each transaction in `BEGIN` / `COMMIT`.
pub fn transactions_sql(txns: &[Vec<String>]) -> String {
    let mut sql = String::new();
    for t in txns {
        sql.push_str("BEGIN;\n");
        for s in t {
            sql.push_str(s);
            sql.push_str(";\n");
        }
        sql.push_str("COMMIT;\n");
    }
    sql
}

/// MariaDB's session mode for the fixtures: zero dates allowed, no silent engine substitution.
pub const MARIADB_FIXTURE_MODE: &str = "SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION';\n";

/// The PostgreSQL counterpart of [`customer_ddl`]: a column of every common PostgreSQL type (a domain, an
/// enum and arrays included), and a large text column (stored out of line, TOASTed). The enum type `tier` and
/// domain `zip` are created too.
pub fn pg_customer_ddl(table: &str) -> String {
    format!(
        "CREATE TYPE tier AS ENUM ('gold', 'silver', 'bronze', 'it''s');
CREATE DOMAIN zip AS varchar(10);
CREATE TABLE \"{table}\" (
  id bigint PRIMARY KEY,
  name varchar(100) NOT NULL,
  t_small smallint, t_int integer, t_big bigint,
  t_num numeric(20,6), t_num_free numeric,
  t_real real, t_double double precision,
  t_text text, t_char char(10), t_zip zip,
  t_bytea bytea, t_bool boolean,
  t_date date, t_time time(3), t_timetz timetz,
  t_ts timestamp(6), t_tstz timestamptz(3),
  t_interval interval, t_uuid uuid,
  t_json json, t_jsonb jsonb,
  t_tier tier, t_ints integer[], t_texts text[],
  t_big_text text
)"
    )
}

fn pg_lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SQL values of one [`pg_customer_ddl`] row. Values stay inside what MySQL/MariaDB can hold
/// (`TIMESTAMP` between 1970 and 2038, numerics with at most 30 fraction digits), so the same data can be
/// copied into either kind of target.
pub fn pg_customer_values(id: i64, rng: &mut Rng) -> String {
    let name = format!("{} {}", NAMES[rng.below(NAMES.len() as u64) as usize].replace('\t', " "), id);
    let y = 1000 + rng.below(9000);
    let date = format!("{y:04}-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28));
    let tiers = ["gold", "silver", "bronze", "it's"];
    let ints: Vec<String> = (0..rng.below(5)).map(|_| (rng.below(2000) as i64 - 1000).to_string()).collect();
    let texts: Vec<String> = (0..rng.below(4)).map(|i| format!("\"t{i} {}\"", rng.below(100))).collect();
    let big_text = if rng.chance(20) {
        // Random hex does not compress: PostgreSQL stores it out of line.
        let hex: String = (0..4000).map(|_| format!("{:02x}", rng.next_u64() as u8)).collect();
        pg_lit(&hex)
    } else {
        "NULL".into()
    };
    let vals = [
        id.to_string(),
        pg_lit(&name),
        (rng.below(65_536) as i64 - 32_768).to_string(),
        (rng.below(4_294_967_296) as i64 - 2_147_483_648).to_string(),
        if rng.chance(10) {
            i64::MIN.to_string()
        } else {
            (rng.next_u64() as i64 >> rng.below(40)).to_string()
        },
        format!(
            "{}{}.{:06}",
            if rng.chance(30) { "-" } else { "" },
            rng.below(99_999_999_999_999),
            rng.below(1_000_000)
        ),
        format!("{}.{}", rng.below(u64::MAX / 2), rng.below(999_999_999_999)),
        format!("{}", (rng.below(1_000_000) as f32) / 8.0),
        format!("{:e}", (rng.next_u64() as f64) / 3.0),
        pg_lit(&"text ü€ ".repeat(rng.below(20) as usize)),
        pg_lit(&format!("c{}", rng.below(1000))),
        pg_lit(&format!("{:05}", rng.below(100_000))),
        format!(
            "'\\x{}'",
            (0..rng.below(40)).map(|_| format!("{:02x}", rng.next_u64() as u8)).collect::<String>()
        ),
        if rng.chance(50) { "true".into() } else { "false".into() },
        pg_lit(&date),
        pg_lit(&format!(
            "{:02}:{:02}:{:02}.{:03}",
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(1000)
        )),
        pg_lit(&format!(
            "{:02}:{:02}:{:02}+{:02}",
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(13)
        )),
        pg_lit(&format!(
            "{date} {:02}:{:02}:{:02}.{:06}",
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(1_000_000)
        )),
        format!("to_timestamp({}.{:03})", 1 + rng.below(2_147_483_000), rng.below(1000)),
        pg_lit(&format!(
            "{} years {} days {}:{:02}:{:02}.5",
            rng.below(10),
            rng.below(400),
            rng.below(100),
            rng.below(60),
            rng.below(60)
        )),
        format!(
            "'{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}'",
            rng.next_u64() as u32,
            rng.below(65536),
            rng.below(4096),
            rng.below(4096),
            rng.next_u64() & 0xFFFF_FFFF_FFFF
        ),
        pg_lit(&format!("{{\"id\": {id}, \"b\": [1, \"ü\"], \"a\": {{\"z\": null}}}}")),
        pg_lit(&format!("{{\"k\": {}, \"n\": {{\"x\": [true, false]}}}}", rng.below(100))),
        pg_lit(tiers[rng.below(4) as usize]),
        format!("'{{{}}}'", ints.join(",")),
        format!("'{{{}}}'", texts.join(",")),
        big_text,
    ];
    let vals: Vec<String> = vals
        .into_iter()
        .enumerate()
        .map(|(i, v)| if i >= 2 && i != 26 && rng.chance(8) { "NULL".to_string() } else { v })
        .collect();
    format!("({})", vals.join(", "))
}

/// Multi-row `INSERT`s of [`pg_customer_values`] rows.
pub fn pg_customer_inserts(
    table: &str,
    first: i64,
    count: i64,
    per_statement: usize,
    seed: u64,
) -> Vec<String> {
    let mut rng = Rng::new(seed ^ first as u64);
    let ids: Vec<i64> = (first..first + count).collect();
    ids.chunks(per_statement.max(1))
        .map(|chunk| {
            let rows: Vec<String> = chunk.iter().map(|id| pg_customer_values(*id, &mut rng)).collect();
            format!("INSERT INTO \"{table}\" VALUES {}", rows.join(",\n"))
        })
        .collect()
}

/// Transactions of mixed PostgreSQL changes: inserts, updates that leave the large text untouched (so its
/// TOASTed value arrives as unchanged), key moves and deletes. Returns them and the next free id.
pub fn pg_customer_changes(table: &str, mut next_id: i64, ops: usize, seed: u64) -> (Vec<Vec<String>>, i64) {
    let mut rng = Rng::new(seed);
    let mut txns = Vec::new();
    let mut done = 0;
    while done < ops {
        let mut stmts = Vec::new();
        for _ in 0..1 + rng.below(6) as usize {
            let id = 1 + rng.below(next_id as u64 - 1) as i64;
            let stmt = match rng.below(100) {
                0..=29 => {
                    let v = pg_customer_values(next_id, &mut rng);
                    next_id += 1;
                    format!("INSERT INTO \"{table}\" VALUES {v}")
                }
                30..=69 => format!(
                    "UPDATE \"{table}\" SET name = 'upd ' || id, t_int = {}, t_num = {}.5, t_jsonb = '{{\"u\": {}}}', \
                     t_ts = now()::timestamp(6), t_ints = '{{{},{}}}' WHERE id = {id}",
                    rng.below(1000),
                    rng.below(1000),
                    rng.below(100),
                    rng.below(10),
                    rng.below(10)
                ),
                70..=74 => {
                    let new_id = next_id;
                    next_id += 1;
                    format!("UPDATE \"{table}\" SET id = {new_id} WHERE id = {id}")
                }
                _ => format!("DELETE FROM \"{table}\" WHERE id = {id}"),
            };
            stmts.push(stmt);
            done += 1;
        }
        txns.push(stmts);
    }
    (txns, next_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_deterministic() {
        assert_eq!(customer_inserts("c", 1, 10, 4, 7), customer_inserts("c", 1, 10, 4, 7));
        assert_eq!(customer_inserts("c", 1, 10, 4, 7).len(), 3);
        let (t1, n1) = customer_changes("c", 10, 11, 50, 3);
        let (t2, n2) = customer_changes("c", 10, 11, 50, 3);
        assert_eq!((t1, n1), (t2, n2));
    }

    #[test]
    fn a_row_has_a_value_for_every_column() {
        let mut rng = Rng::new(1);
        let row = customer_values(1, &mut rng);
        // Count top-level commas of the VALUES tuple.
        let mut depth = 0;
        let mut in_str = false;
        let mut prev = ' ';
        let mut n = 1;
        for c in row[1..row.len() - 1].chars() {
            match c {
                '\'' if prev != '\\' => in_str = !in_str,
                '(' if !in_str => depth += 1,
                ')' if !in_str => depth -= 1,
                ',' if !in_str && depth == 0 => n += 1,
                _ => {}
            }
            prev = c;
        }
        assert_eq!(n, 42);
    }
}
