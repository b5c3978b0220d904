//! Any document, any customer edit: a refused edit changes nothing; an accepted one prints a
//! document whose customer lines re-parse to the intended names.
#![no_main]

use costplus_hba::{Document, MemEnv, ReadOptions, RuleSpec, read_rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&[u8], String, String, bool)| {
    let (data, customer, name, remove) = input;
    let mut doc = Document::parse(data);
    let before = doc.to_bytes();
    let spec = RuleSpec::hostssl_scram(&name, &name, "::/0");
    match doc.set_customer_rules(&customer, &[spec]) {
        Err(_) => assert_eq!(doc.to_bytes(), before),
        Ok(_) => {
            let printed = doc.to_bytes();
            let re = Document::parse(&printed);
            let lines = re.customer_lines(&customer);
            assert_eq!(lines.len(), 1);
            let set = read_rules(
                &printed,
                "/d/pg_hba.conf",
                &ReadOptions::default(),
                &MemEnv::new(),
            );
            // the line may follow a damaged continuation of the operator's, so only check
            // when the server sees it as a line of its own
            if let Some(row) = set
                .rows
                .iter()
                .find(|r| r.line_number as usize == lines[0] + 1)
            {
                if let Some(db) = &row.database() {
                    if row.error.is_none() {
                        assert_eq!(
                            db,
                            &vec![String::from_utf8_lossy(name.as_bytes()).into_owned()]
                        );
                    }
                }
            }
            if remove {
                doc.remove_customer_rules(&customer).unwrap();
            }
        }
    }
});
