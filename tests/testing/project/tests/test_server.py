"""Which Postgres server the plugin used: its data directory, printed for the outer test to read."""

from sqlalchemy import text

from tocsin import Database


async def test_record_the_server(tocsin_db: Database) -> None:
    async with tocsin_db.transaction() as conn:
        data_directory = await conn.scalar(text("SHOW data_directory"))
        database = await conn.scalar(text("SELECT current_database()"))
        tables = await conn.scalar(text("SELECT count(*) FROM pg_tables WHERE tablename = 'workflow_runs'"))
    assert database.startswith("tocsin_t_") and tables == 1
    print(f"data_directory={data_directory}")
