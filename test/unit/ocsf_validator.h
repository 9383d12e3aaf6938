// A validator of OCSF events against the schema's own definition files (the ocsf-schema
// repository's dictionary.json, categories.json, events/, objects/, profiles/, includes/), read
// from a directory: test/data/ocsf-<version>/ holds the files this project's events need.
//
// It compiles a class the way the schema describes it: the class's attributes over those of the
// class it extends (recursively, down to base_event), with the $include files (profiles,
// includes) merged in, each attribute's definition completed from the dictionary; enums merge.
// Objects alike. An event is then checked for: every required attribute present (recursively in
// objects), no attribute the class or object does not define (except inside the free-form
// "object" type and json_t), each value of its type (string_t and its subtypes with their
// regex and max_len, integer_t as 32-bit, long_t, float_t, boolean_t, port_t ranges, arrays
// where is_array), integer enums holding one of their values, *_name siblings matching their
// *_id's caption (unless the id is 99, Other), at_least_one and just_one constraints, and the
// classification arithmetic: category_uid from categories.json, class_uid = category_uid * 1000
// + the class's uid, type_uid = class_uid * 100 + activity_id, class_name, category_name and
// type_name ("<class caption>: <activity caption>").
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace ocsf_test {

class Validator {
public:
    explicit Validator(std::string schema_dir);
    // The problems found in one event (empty: valid). Each names the attribute's path.
    std::vector<std::string> validate(const nlohmann::json& event);
    // Every definition file read so far, relative to the schema directory.
    const std::set<std::string>& files_read() const { return files_read_; }

private:
    struct Compiled {
        std::string caption;
        nlohmann::json attributes;   // name -> merged definition
        nlohmann::json constraints;  // at_least_one / just_one
        int uid = -1;                // classes: class_uid
        int category_uid = -1;
        std::string category_name;
    };
    nlohmann::json read(const std::string& relative);
    const Compiled& event_class(int class_uid);
    const Compiled& object(const std::string& name);
    void merge_file_attributes(nlohmann::json& into, const nlohmann::json& definition);
    void complete(nlohmann::json& attributes);
    void check_object(const Compiled& type, const nlohmann::json& value, const std::string& path,
                      std::vector<std::string>& problems);
    void check_value(const nlohmann::json& definition, const nlohmann::json& value,
                     const std::string& path, std::vector<std::string>& problems);
    void check_scalar(const std::string& type, const nlohmann::json& definition,
                      const nlohmann::json& value, const std::string& path,
                      std::vector<std::string>& problems);

    std::string dir_;
    nlohmann::json dictionary_;
    nlohmann::json categories_;
    std::map<int, std::string> class_files_;      // class_uid -> file
    std::map<std::string, std::string> object_files_;  // object name -> file
    std::map<int, Compiled> classes_;
    std::map<std::string, Compiled> objects_;
    std::set<std::string> files_read_;
    std::set<std::string> profiles_;  // declared by the event being validated
};

}  // namespace ocsf_test
