// pii_audit_ocsf_validate: reads OCSF events, one JSON object per line, from standard input and
// validates each against the vendored OCSF 1.3.0 definition files (ocsf_validator.h). Prints
// every problem with its line number and "N events valid" at the end; exits 1 if any line is
// not a valid event or no line was read. The server test pipes export(..., 'ocsf') through it.
#include <iostream>
#include <string>

#include "ocsf_validator.h"

int main() {
    ocsf_test::Validator validator(PII_AUDIT_OCSF_SCHEMA_DIR);
    std::string line;
    long lines = 0, bad = 0;
    while (std::getline(std::cin, line)) {
        ++lines;
        nlohmann::json event;
        try {
            event = nlohmann::json::parse(line);
        } catch (const std::exception& e) {
            std::cout << "line " << lines << ": not JSON: " << e.what() << "\n";
            ++bad;
            continue;
        }
        auto problems = validator.validate(event);
        for (const auto& p : problems) std::cout << "line " << lines << ": " << p << "\n";
        if (!problems.empty()) ++bad;
    }
    std::cout << (lines - bad) << " events valid, " << bad << " not\n";
    return bad == 0 && lines > 0 ? 0 : 1;
}
