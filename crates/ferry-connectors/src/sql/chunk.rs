//! Cuts a stream of rows into chunks of `chunk_rows` rows, never between two rows that share a
//! cursor value (a load resumed after that value must not skip the other one).

use ferry_core::Body;
use ferry_core::records::{BatchWriter, Column};

/// A finished chunk of a load, as a reader hands it to the puller.
#[derive(Debug)]
pub(crate) struct Ready {
    /// From 1 within the load.
    pub number: u64,
    pub rows: usize,
    /// The last chunk of the load.
    pub last: bool,
    /// The record batch.
    pub body: Body,
    /// In incremental mode, the cursor values of the chunk's first and last rows (the
    /// database's text form); `None` without rows or without a cursor.
    pub first_cursor: Option<String>,
    pub last_cursor: Option<String>,
}

/// Builds the chunks of one load, row by row.
///
/// For each row: [`Chunker::start_row`] (which hands back the previous chunk when it is full),
/// then the fields into [`Chunker::writer`], then `end_row` on it; at the end
/// [`Chunker::finish`] gives the last chunk. A chunk is only finished when the row after it is
/// there, so it knows whether it is the last one.
pub(crate) struct Chunker {
    columns: Vec<Column>,
    chunk_rows: usize,
    writer: BatchWriter,
    /// Chunks finished so far.
    number: u64,
    first_cursor: Option<String>,
    last_cursor: Option<String>,
}

impl Chunker {
    pub fn new(columns: Vec<Column>, chunk_rows: usize) -> Self {
        Chunker {
            writer: BatchWriter::new(columns.clone()),
            columns,
            chunk_rows,
            number: 0,
            first_cursor: None,
            last_cursor: None,
        }
    }

    /// Starts a row whose cursor value is `cursor` (`None` in a full load). Returns the current
    /// chunk, finished, when it is full and this row does not share its last cursor value; the
    /// row then starts the next chunk.
    pub fn start_row(&mut self, cursor: Option<&str>) -> Option<Ready> {
        let mut finished = None;
        if self.writer.rows() >= self.chunk_rows {
            let tie =
                matches!((cursor, &self.last_cursor), (Some(value), Some(last)) if value == last);
            if !tie {
                finished = Some(self.cut(false));
            }
        }
        if let Some(value) = cursor {
            if self.writer.rows() == 0 {
                self.first_cursor = Some(value.to_string());
            }
            match &mut self.last_cursor {
                Some(last) if last == value => {}
                Some(last) => {
                    last.clear();
                    last.push_str(value);
                }
                None => self.last_cursor = Some(value.to_string()),
            }
        }
        finished
    }

    /// Where the current row's fields go.
    pub fn writer(&mut self) -> &mut BatchWriter {
        &mut self.writer
    }

    /// The last chunk of the load (with no rows when the result was empty).
    pub fn finish(mut self) -> Ready {
        self.cut(true)
    }

    /// Finishes the current chunk and starts an empty one.
    fn cut(&mut self, last: bool) -> Ready {
        let writer = std::mem::replace(&mut self.writer, BatchWriter::new(self.columns.clone()));
        self.number += 1;
        let rows = writer.rows();
        let (first_cursor, last_cursor) = match rows {
            0 => (None, None),
            _ => (self.first_cursor.take(), self.last_cursor.clone()),
        };
        Ready {
            number: self.number,
            rows,
            last,
            body: writer.finish(),
            first_cursor,
            last_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::records::ColumnType;

    use super::*;

    /// Feeds rows with these cursor values; returns each chunk's values and last flag.
    fn chunks(values: &[&str], chunk_rows: usize) -> Vec<(Vec<String>, bool)> {
        let columns = vec![Column::new("v", ColumnType::Text)];
        let mut chunker = Chunker::new(columns, chunk_rows);
        let mut ready = Vec::new();
        for value in values {
            ready.extend(chunker.start_row(Some(value)));
            chunker.writer().text(value);
            chunker.writer().end_row();
        }
        ready.push(chunker.finish());
        ready
            .into_iter()
            .enumerate()
            .map(|(index, chunk)| {
                assert_eq!(chunk.number, index as u64 + 1);
                let batch = ferry_core::records::read(&chunk.body).unwrap();
                let rows: Vec<String> = ferry_core::records::rows(&batch.data)
                    .into_iter()
                    .map(|row| row[0].clone().unwrap())
                    .collect();
                assert_eq!(rows.len(), chunk.rows);
                assert_eq!(chunk.first_cursor.as_ref(), rows.first());
                assert_eq!(chunk.last_cursor.as_ref(), rows.last());
                (rows, chunk.last)
            })
            .collect()
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| value.to_string()).collect()
    }

    #[test]
    fn full_chunks_are_cut_when_the_next_row_comes() {
        assert_eq!(
            chunks(&["1", "2", "3", "4", "5"], 2),
            [
                (strings(&["1", "2"]), false),
                (strings(&["3", "4"]), false),
                (strings(&["5"]), true)
            ]
        );
        // Exactly full: the last chunk is the full one, no empty chunk after it.
        assert_eq!(chunks(&["1", "2"], 2), [(strings(&["1", "2"]), true)]);
    }

    #[test]
    fn rows_sharing_a_cursor_value_stay_in_one_chunk() {
        assert_eq!(
            chunks(&["1", "2", "2", "2", "3"], 2),
            [
                (strings(&["1", "2", "2", "2"]), false),
                (strings(&["3"]), true)
            ]
        );
    }

    #[test]
    fn an_empty_result_is_one_empty_last_chunk() {
        assert_eq!(chunks(&[], 10), [(Vec::new(), true)]);
    }
}
