//! An upload's rejected rows, read a page at a time through a server-side cursor, so a download
//! of millions of them holds one page in memory. The cursor lives in a read-only transaction of
//! the caller's connection, which should be its own: the transaction stays open between pages.

use tokio_postgres::Client;
use uuid::Uuid;

use crate::uploads::RejectedRow;
use crate::LedgerError;

/// Opens the cursor over the upload's rejected rows, in chunk and line order.
pub async fn open(client: &Client, upload_id: Uuid) -> Result<(), LedgerError> {
    // A reader that stalls a minute between pages ends the session: the transaction holds a
    // snapshot (vacuum waits for it) and a connection.
    client
        .batch_execute("BEGIN READ ONLY; SET LOCAL idle_in_transaction_session_timeout = '60s'")
        .await?;
    client
        .execute(
            "DECLARE rejected NO SCROLL CURSOR FOR
             SELECT chunk_no, line_no, reason, raw_line FROM rejected_rows
             WHERE upload_id = $1 ORDER BY chunk_no, line_no",
            &[&upload_id],
        )
        .await?;
    Ok(())
}

/// The next `rows` rejected rows (fewer at the end, none once all were read).
pub async fn next_page(client: &Client, rows: u32) -> Result<Vec<RejectedRow>, LedgerError> {
    let page = client
        .query(&format!("FETCH FORWARD {rows} FROM rejected"), &[])
        .await?;
    Ok(page.iter().map(RejectedRow::from_row).collect())
}

/// Ends the cursor's transaction.
pub async fn close(client: &Client) -> Result<(), LedgerError> {
    client.batch_execute("COMMIT").await?;
    Ok(())
}
