//! Feeds arbitrary bytes to every decoder and validator that reads untrusted
//! input: the authorization decoder (with and without the subject check)
//! and the enrollment request validator of every subject, plus the journal
//! reader. Nothing may panic, every refusal must carry a reason, and what is
//! accepted must obey the protocol's shapes.

#![no_main]

use cashback_engine::authorization::Decoder;
use cashback_engine::enrollment::{parse_request, EnrollCommand, EnrollKind};
use cashback_engine::reason::Reason;
use cashback_engine::time::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let received = Timestamp::from_unix_nanos(1_616_198_400_000_000_000); // 2021-03-20
    let decoder = Decoder::default();
    for subject in [Some("32875"), None] {
        let decoded = match subject {
            Some(token) => decoder.decode_on(token, data, received),
            None => decoder.decode(data, received),
        };
        match decoded {
            Ok(a) => {
                assert!(a.total_amount >= 1 && a.total_amount <= i64::MAX as u64);
                assert!(a.circuit_type <= 10 && a.operation_type <= 3);
                assert!(!a.acquirer_code.is_empty() && a.acquirer_code.chars().count() <= 20);
                if subject.is_some() {
                    assert_eq!(&*a.acquirer_code, "32875");
                }
            }
            Err(r) => {
                assert!(Reason::ALL.contains(&r.reason));
                assert!(!r.message.is_empty());
            }
        }
    }
    for (kind, _) in EnrollKind::ALL {
        match parse_request(kind, data) {
            Ok(cmd) => assert_eq!(EnrollCommand::from_journal(&cmd.to_journal()), Ok(cmd)),
            Err(e) => assert!(!e.code.is_empty() && !e.message.is_empty()),
        }
    }
    let _ = EnrollCommand::from_journal(data);
});
