//! The producer's ids of stored events, by key: what answers show instead of the 16-byte key.
//! One query per bucket for a whole page of keys, reading two narrow columns (never a body).

use std::collections::HashMap;

use super::DuckStore;
use crate::error::Result;
use crate::ids::EventId;

impl DuckStore {
    pub(super) fn producer_ids_by_key(&self, ids: &[EventId]) -> Result<HashMap<EventId, String>> {
        let mut out = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(out);
        }
        // UUIDs printed by the uuid crate: hex and hyphens only, safe to inline.
        let list = ids
            .iter()
            .map(|id| format!("'{}'", id.0))
            .collect::<Vec<_>>()
            .join(", ");
        let producer = if self.schema >= 4 {
            "producer_id"
        } else {
            "NULL::VARCHAR"
        };
        for table in self.event_tables()? {
            let sql = format!(
                "SELECT event_id::VARCHAR, {producer} FROM {table} WHERE event_id IN ({list})"
            );
            let mut stmt = self.conn.prepare(&sql)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let key: String = row.get(0)?;
                let Ok(key) = key.parse::<EventId>() else {
                    continue;
                };
                let producer: Option<String> = row.get(1)?;
                out.insert(key, producer.unwrap_or_else(|| key.to_string()));
            }
            if out.len() == ids.len() {
                break;
            }
        }
        Ok(out)
    }
}
