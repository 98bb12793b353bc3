FLASK_APP=wsgi:flask_app
