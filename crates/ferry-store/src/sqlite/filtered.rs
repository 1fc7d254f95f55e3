//! A SELECT built from the filters that are set, with numbered parameters: the queue
//! browser's and the runs list's pages.

use rusqlite::types::Value;

pub(super) struct Filtered {
    pub sql: String,
    pub args: Vec<Value>,
}

impl Filtered {
    /// `select` must end in a WHERE clause the conditions can follow with ` AND …`.
    pub fn new(select: String) -> Filtered {
        Filtered {
            sql: select,
            args: Vec::new(),
        }
    }

    /// Binds `value`; returns its parameter, e.g. `?3`.
    pub fn bind(&mut self, value: Value) -> String {
        self.args.push(value);
        format!("?{}", self.args.len())
    }

    /// Adds ` AND condition`, each `?` in it standing for `value`.
    pub fn and(&mut self, condition: &str, value: Value) {
        let parameter = self.bind(value);
        self.sql.push_str(" AND ");
        self.sql.push_str(&condition.replace('?', &parameter));
    }

    /// Adds text with no parameter (a literal the planner must see, an ORDER BY).
    pub fn push(&mut self, text: &str) {
        self.sql.push_str(text);
    }
}
