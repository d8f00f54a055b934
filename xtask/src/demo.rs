pub fn demo() -> anyhow::Result<()> {
    anyhow::bail!("todo")
}
